import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The baseline: two unencrypted UDP forwarders written the obvious way (blocking recv, sendto, one thread
/// per hop), on the same path as the switch: port socket → UDP → UDP → VM socket. No learning, no sealing.
final class PlainForwarder: @unchecked Sendable {
    let portA: String
    private let stop = SharedInt()
    private var workers: [Worker] = []
    private var fds: [CInt] = []
    /// CPU nanoseconds each forwarding thread used, written when it stops.
    let cpu = SharedInt()

    init(directory: String, nicB: String) {
        self.portA = directory + "/plain-a.port"
        let portFD = RawSocket.unixDatagram(boundTo: self.portA)
        let (udpA, _) = RawSocket.udp()
        let (udpB, portB) = RawSocket.udp()
        let outFD = RawSocket.unixDatagram(boundTo: directory + "/plain-b.port")
        self.fds = [portFD, udpA, udpB, outFD]
        for fd in [portFD, udpB] { RawSocket.setReceiveTimeout(fd, milliseconds: 100) }
        let stop = self.stop
        let cpu = self.cpu
        self.workers.append(
            Worker {
                var toB = RawSocket.inetAddress(port: portB)
                var buffer = [UInt8](repeating: 0, count: 9216)
                while !(stop.load() != 0) {
                    let n = buffer.withUnsafeMutableBytes { recv(portFD, $0.baseAddress, $0.count, 0) }
                    if n > 0 {
                        _ = buffer.withUnsafeBytes {
                            RawSocket.send(udpA, UnsafeRawBufferPointer(rebasing: $0[0..<n]), to: &toB)
                        }
                    }
                }
                cpu.add(Int(RawSocket.threadCPUNanoseconds()))
            }
        )
        self.workers.append(
            Worker {
                var toNIC = RawSocket.unixAddress(nicB)
                var buffer = [UInt8](repeating: 0, count: 9216)
                while !(stop.load() != 0) {
                    let n = buffer.withUnsafeMutableBytes { recv(udpB, $0.baseAddress, $0.count, 0) }
                    if n > 0 {
                        _ = buffer.withUnsafeBytes {
                            RawSocket.send(outFD, UnsafeRawBufferPointer(rebasing: $0[0..<n]), to: &toNIC)
                        }
                    }
                }
                cpu.add(Int(RawSocket.threadCPUNanoseconds()))
            }
        )
    }

    func close() {
        guard self.stop.load() == 0 else { return }
        self.stop.store(1)
        for worker in self.workers { worker.join() }
        for fd in self.fds { Glibc.close(fd) }
    }
}
