import VNSnapCore

/// A fake instant: time moves only when a test says so.
struct TestInstant: InstantProtocol {
    var offset: Duration

    static let zero = TestInstant(offset: .zero)

    func advanced(by duration: Duration) -> TestInstant { TestInstant(offset: self.offset + duration) }
    func duration(to other: TestInstant) -> Duration { other.offset - self.offset }
    static func < (lhs: TestInstant, rhs: TestInstant) -> Bool { lhs.offset < rhs.offset }
}

/// Runs a mutating call outside `#expect`, which cannot take mutating expressions, and returns its result.
func step<State, Result>(_ state: inout State, _ body: (inout State) -> Result) -> Result {
    body(&state)
}
