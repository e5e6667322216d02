/// Defaults for settings the config may leave out.
public enum PeerConfigDefaults {
    /// Where a peer keeps its state when `peer.data_dir` is not set.
    public static let dataDirectory = "/var/lib/vnsnap-peer"
    /// The control socket when `peer.control_socket` is not set.
    public static let controlSocket = "/run/vnsnap-peer/control.sock"
    /// Where `GET /metrics` listens when `[metrics]` turns it on: loopback, Prometheus' port for exporters.
    public static let metricsAddress = "127.0.0.1:9464"
}
