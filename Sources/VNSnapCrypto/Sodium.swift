import CSodium

/// libsodium's one-time initialisation.
enum Sodium {
    /// Runs `sodium_init` once per process; every entry point of this module touches it first.
    static let ready: Bool = {
        let result = sodium_init()
        precondition(result >= 0, "sodium_init failed (\(result)): libsodium cannot be used")
        return true
    }()
}
