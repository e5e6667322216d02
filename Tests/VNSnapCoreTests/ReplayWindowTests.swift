import Testing
import VNSnapCore

@Suite struct ReplayWindowTests {
    @Test func test_accept_inOrder_shouldAcceptEachOnce() {
        var window = ReplayWindow()
        for s in UInt64(0)..<5000 {
            #expect(step(&window) { $0.accept(s) })
            #expect(!step(&window) { $0.accept(s) })
        }
    }

    @Test func test_accept_reorderedWithinWindow_shouldAcceptEachOnce() {
        var window = ReplayWindow()
        #expect(step(&window) { $0.accept(100) })
        #expect(step(&window) { $0.accept(90) })
        #expect(step(&window) { $0.accept(99) })
        #expect(!step(&window) { $0.accept(90) })
        #expect(step(&window) { $0.accept(101) })
        #expect(!step(&window) { $0.accept(99) })
    }

    @Test func test_accept_olderThanWindow_shouldReject() {
        var window = ReplayWindow()
        #expect(step(&window) { $0.accept(5000) })
        #expect(!step(&window) { $0.accept(5000 - UInt64(ReplayWindow.size)) })
        #expect(step(&window) { $0.accept(5000 - UInt64(ReplayWindow.size) + 1) })
    }

    @Test func test_accept_afterBigJump_shouldForgetOldBitsButRejectOld() {
        var window = ReplayWindow()
        #expect(step(&window) { $0.accept(1) })
        #expect(step(&window) { $0.accept(1_000_000) })
        #expect(!step(&window) { $0.accept(1) })
        #expect(step(&window) { $0.accept(999_999) })
        #expect(!step(&window) { $0.accept(1_000_000) })
    }

    @Test func test_accept_slotReuseAfterSlide_shouldNotCarryStaleBits() {
        var window = ReplayWindow()
        #expect(step(&window) { $0.accept(10) })
        // 10 + size maps to the same slot as 10; it must still be accepted once.
        let later = 10 + UInt64(ReplayWindow.size)
        #expect(step(&window) { $0.accept(later) })
        #expect(!step(&window) { $0.accept(later) })
        #expect(step(&window) { $0.accept(later - 1) })
    }

    @Test func test_inboundState_whenSessionRestarts_shouldResetWindow_andRejectOldSession() {
        var state = InboundTunnelState()
        #expect(state.admit(session: 10, sequence: 0) == nil)
        #expect(state.admit(session: 10, sequence: 1) == nil)
        #expect(state.admit(session: 10, sequence: 1) == .replayed)
        #expect(state.admit(session: 11, sequence: 0) == nil)
        #expect(state.admit(session: 10, sequence: 2) == .staleSession)
        #expect(state.admit(session: 11, sequence: 1) == nil)
    }

    @Test func test_accept_sequencesAtTheTopOfTheRange_neverOverflow() {
        var window = ReplayWindow()
        #expect(step(&window) { $0.accept(UInt64.max - 2) })
        #expect(step(&window) { $0.accept(UInt64.max) })
        #expect(!step(&window) { $0.accept(UInt64.max) })
        #expect(step(&window) { $0.accept(UInt64.max - 1) })
    }
}
