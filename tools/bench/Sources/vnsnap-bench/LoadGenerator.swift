import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Writes Ethernet frames into a VM port's datagram socket and reads them where they come out, as a VM
/// would: one socket stands for VM A's NIC (sender), one for VM B's NIC (receiver).
final class LoadGenerator: @unchecked Sendable {
    static let macA: [UInt8] = [0x52, 0x54, 0x00, 0xaa, 0xaa, 0xaa]
    static let macB: [UInt8] = [0x52, 0x54, 0x00, 0xbb, 0xbb, 0xbb]

    let nicA: String
    let nicB: String
    private let fdA: CInt
    private let fdB: CInt

    init(directory: String) {
        self.nicA = directory + "/lg-a.nic"
        self.nicB = directory + "/lg-b.nic"
        self.fdA = RawSocket.unixDatagram(boundTo: self.nicA)
        self.fdB = RawSocket.unixDatagram(boundTo: self.nicB)
        RawSocket.setReceiveTimeout(self.fdB, milliseconds: 50)
    }

    func close() {
        Glibc.close(self.fdA)
        Glibc.close(self.fdB)
    }

    private static func frame(size: Int, from: [UInt8], to: [UInt8]) -> [UInt8] {
        var frame = [UInt8](repeating: 0x5a, count: max(size, 30))
        frame.replaceSubrange(0..<6, with: to)
        frame.replaceSubrange(6..<12, with: from)
        frame[12] = 0x88
        frame[13] = 0xb5
        return frame
    }

    /// Sends one frame from B's NIC into `portB`, so switches learn where B lives.
    func announceB(portB: String) {
        var target = RawSocket.unixAddress(portB)
        let frame = Self.frame(size: 64, from: Self.macB, to: [0xff, 0xff, 0xff, 0xff, 0xff, 0xff])
        _ = frame.withUnsafeBytes { RawSocket.send(self.fdB, $0, to: &target) }
        self.drain()
    }

    /// Empties B's receive queue.
    func drain() {
        var buffer = [UInt8](repeating: 0, count: 9216)
        usleep(50_000)
        while buffer.withUnsafeMutableBytes({ recv(self.fdB, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }) > 0 {}
    }

    /// Frames per second delivered from `portA` to B with at most `window` in flight, over `seconds`.
    ///
    /// The sender blocks on a semaphore of window credits that the receiver returns, so the generator
    /// uses CPU only for its syscalls and leaves the rest to what is measured.
    func throughput(portA: String, frameSize: Int, seconds: Double, window: Int) -> (framesPerSecond: Double, lost: Int)
    {
        let received = SharedInt()
        let stop = SharedInt()
        let credits = DispatchSemaphore(value: window)
        let fdB = self.fdB
        let receiver = Worker {
            var buffer = [UInt8](repeating: 0, count: 9216)
            while stop.load() == 0 {
                if buffer.withUnsafeMutableBytes({ recv(fdB, $0.baseAddress, $0.count, 0) }) > 0 {
                    received.add(1)
                    credits.signal()
                }
            }
        }
        var target = RawSocket.unixAddress(portA)
        var frame = Self.frame(size: frameSize, from: Self.macA, to: Self.macB)
        var sent = 0
        var lost = 0
        let start = RawSocket.nowNanoseconds()
        let end = start + UInt64(seconds * 1e9)
        while RawSocket.nowNanoseconds() < end {
            if credits.wait(timeout: .now() + .milliseconds(20)) == .timedOut {
                // Nothing came back for 20 ms with a full window: what is in flight is lost; refill.
                let inFlight = sent - received.load() - lost
                lost += inFlight
                for _ in 0..<inFlight { credits.signal() }
                continue
            }
            frame.withUnsafeMutableBytes { raw in
                raw.storeBytes(of: UInt64(sent), toByteOffset: 14, as: UInt64.self)
                _ = RawSocket.send(self.fdA, UnsafeRawBufferPointer(raw), to: &target)
            }
            sent += 1
        }
        let elapsed = Double(RawSocket.nowNanoseconds() - start) / 1e9
        let delivered = received.load()
        usleep(100_000)
        stop.store(1)
        receiver.join()
        let total = received.load()
        self.drain()
        return (Double(delivered) / elapsed, sent - total)
    }

    /// One-way latencies in nanoseconds of `samples` frames sent one at a time from `portA` to B.
    func latencies(portA: String, frameSize: Int, samples: Int) -> [UInt64] {
        var target = RawSocket.unixAddress(portA)
        let frame = Self.frame(size: frameSize, from: Self.macA, to: Self.macB)
        var buffer = [UInt8](repeating: 0, count: 9216)
        var result: [UInt64] = []
        result.reserveCapacity(samples)
        for _ in 0..<samples {
            let sentAt = RawSocket.nowNanoseconds()
            frame.withUnsafeBytes { _ = RawSocket.send(self.fdA, $0, to: &target) }
            if buffer.withUnsafeMutableBytes({ recv(self.fdB, $0.baseAddress, $0.count, 0) }) > 0 {
                result.append(RawSocket.nowNanoseconds() - sentAt)
            }
        }
        return result
    }
}
