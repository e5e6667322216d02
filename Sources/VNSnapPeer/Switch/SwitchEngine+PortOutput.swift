import NIOCore
import VNSnapCore

#if canImport(Glibc)
import Glibc
#endif

/// A port's output side: connecting to the VM's socket, batching a read cycle's frames into one `sendmmsg`,
/// and holding what a slow VM has no room for.
extension SwitchEngine {
    /// The VM behind `vm`'s port has (re)started: connect to its new socket. A socket still connected to the
    /// old QEMU would refuse the new one's frames.
    func vmStarted(_ vm: String) {
        guard let index = self.ports.firstIndex(where: { $0.vm == vm }), let fd = self.ports[index].fd else { return }
        UnixDatagramSocket.disconnect(fd: fd)
        self.ports[index].connected = false
        self.ports[index].lastConnectAttempt = nil
        self.connectIfNeeded(PortID(index))
    }

    /// Connects a port to its VM's socket when it is not yet (QEMU started after the switch, or restarted).
    func connectIfNeeded(_ port: PortID, now: ContinuousClock.Instant = .now) {
        guard !self.ports[port.rawValue].connected, let fd = self.ports[port.rawValue].fd else { return }
        if let last = self.ports[port.rawValue].lastConnectAttempt, last.duration(to: now) < .milliseconds(100) {
            return
        }
        self.ports[port.rawValue].lastConnectAttempt = now
        self.ports[port.rawValue].connected = UnixDatagramSocket.connect(
            fd: fd,
            to: &self.ports[port.rawValue].targetAddress
        )
    }

    /// Frames per port sent with one `sendmmsg`.
    static let outboxLimit = 64

    func sendToPort(_ port: PortID, frame: ByteBuffer) {
        guard self.ports[port.rawValue].backlog.isEmpty else {
            self.enqueue(frame, on: port)
            return
        }
        if self.ports[port.rawValue].outbox.isEmpty { self.portsToFlush.append(port) }
        self.ports[port.rawValue].outbox.append(frame)
        if self.ports[port.rawValue].outbox.count >= Self.outboxLimit { self.flushOutbox(port) }
    }

    /// Sends a port's outbox; what the VM's queue has no room for goes to the backlog, in order.
    func flushOutbox(_ port: PortID) {
        let frames = self.ports[port.rawValue].outbox
        self.ports[port.rawValue].outbox.removeAll(keepingCapacity: true)
        guard !frames.isEmpty else { return }
        guard let fd = self.ports[port.rawValue].fd else {
            for _ in frames { self.ports[port.rawValue].counters.dropped(.sendFailed) }
            return
        }
        var next = 0
        while next < frames.count {
            let (sent, failure) = UnixDatagramSocket.send(
                fd: fd,
                to: &self.ports[port.rawValue].targetAddress,
                frames: frames[next...]
            )
            for frame in frames[next..<next + sent] { self.ports[port.rawValue].counters.sent(frame.readableBytes) }
            next += sent
            switch failure {
            case .none:
                return
            case .queueFull:
                for frame in frames[next...] { self.enqueue(frame, on: port) }
                return
            case .unreachable:
                self.ports[port.rawValue].counters.dropped(.sendFailed)
                self.ports[port.rawValue].connected = false
                next += 1
            }
        }
    }

    func trySend(_ frame: ByteBuffer, on port: PortID) -> Result<Void, UnixDatagramSocket.SendFailure> {
        guard let fd = self.ports[port.rawValue].fd else { return .failure(.unreachable) }
        return frame.withUnsafeReadableBytes { bytes in
            do throws(UnixDatagramSocket.SendFailure) {
                try UnixDatagramSocket.send(fd: fd, to: &self.ports[port.rawValue].targetAddress, bytes: bytes)
                return .success(())
            } catch {
                return .failure(error)
            }
        }
    }

    func enqueue(_ frame: ByteBuffer, on port: PortID) {
        guard self.ports[port.rawValue].backlog.count < Self.portBacklogLimit else {
            self.ports[port.rawValue].counters.dropped(.queueFull)
            return
        }
        // Copy: the frame may be a slice of a large vector-read buffer that must not stay pinned.
        var copy = self.allocator.buffer(capacity: frame.readableBytes)
        copy.writeImmutableBuffer(frame)
        self.ports[port.rawValue].backlog.append(copy)
        self.scheduleDrain(port)
    }

    func scheduleDrain(_ port: PortID) {
        guard !self.ports[port.rawValue].drainScheduled else { return }
        self.ports[port.rawValue].drainScheduled = true
        self.eventLoop.assumeIsolated().scheduleTask(in: Self.backlogRetry) {
            self.ports[port.rawValue].drainScheduled = false
            self.drainBacklog(port)
        }
    }

    func drainBacklog(_ port: PortID) {
        while let frame = self.ports[port.rawValue].backlog.first {
            switch self.trySend(frame, on: port) {
            case .success:
                self.ports[port.rawValue].counters.sent(frame.readableBytes)
                self.ports[port.rawValue].backlog.removeFirst()
            case .failure(.queueFull):
                self.scheduleDrain(port)
                return
            case .failure(.unreachable):
                self.ports[port.rawValue].counters.dropped(.sendFailed)
                self.ports[port.rawValue].connected = false
                self.ports[port.rawValue].backlog.removeFirst()
            }
        }
    }

    /// A read from a port's socket failed.
    func portReadFailed(_ port: PortID) {
        self.ports[port.rawValue].counters.dropped(.receiveFailed)
    }
}
