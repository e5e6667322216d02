/// What config text must pass before TOMLKit parses it: its parser (toml++ 3.4) aborts the process, release builds
/// too, on inputs it should refuse (`[/x]`, `[\u{0F}peer]`: a table header that does not start with a key), found
/// by fuzzing. Refusing them here, naming line and column, keeps a broken config a clear error.
enum TOMLPrecheck {
    /// Refuses control characters (TOML allows none but tab and line ends) and table headers whose first key does
    /// not start with a bare-key character or a quote.
    static func check(_ text: String, path: String) throws(ConfigError) {
        var lexer = Lexer()
        var line = 1
        var column = 0
        // A byte-order mark opening the file is not part of the document (toml++ skips it too).
        let scalars = text.unicodeScalars
        for scalar in scalars.first == "\u{FEFF}" ? scalars.dropFirst() : scalars[...] {
            column += 1
            switch scalar.value {
            case 0x0A:
                line += 1
                column = 0
            case 0x09, 0x0D:
                break
            case 0x00...0x1F, 0x7F:
                throw Self.error(
                    path,
                    line,
                    column,
                    "control character U+\(Self.hex(scalar.value)) (TOML allows none but tab)"
                )
            default:
                break
            }
            guard lexer.next(scalar) else {
                throw Self.error(path, line, column, "a table header must start with a key, not '\(scalar)'")
            }
        }
    }

    private static func error(_ path: String, _ line: Int, _ column: Int, _ message: String) -> ConfigError {
        ConfigError(path: path, key: nil, message: "line \(line), column \(column): \(message)")
    }

    private static func hex(_ value: UInt32) -> String {
        let digits = String(value, radix: 16, uppercase: true)
        return String(repeating: "0", count: max(0, 4 - digits.count)) + digits
    }

    /// Just enough of TOML's lexical structure to know where a table header's key begins: outside strings, comments
    /// and array values, a `[` (or `[[`) opening a line.
    struct Lexer {
        enum State: Equatable {
            /// At the start of a line, before anything but whitespace.
            case lineStart
            /// After a header's `[` (`brackets` of them), before its key.
            case headerKey(brackets: Int)
            /// Anywhere else in a line, `depth` array brackets deep.
            case body
            case comment
            case string(quote: Unicode.Scalar, multiLine: Bool, escaped: Bool)
        }

        var state = State.lineStart
        /// Open array brackets of a value (a value's lines may start with `[` without being headers).
        var depth = 0
        /// The quote characters just seen, to find `"""` and `'''`.
        var quotes = 0
        var lastQuote: Unicode.Scalar = "\""

        /// Takes the next character; `false` when it cannot begin a table header's key.
        mutating func next(_ scalar: Unicode.Scalar) -> Bool {
            switch self.state {
            case .headerKey(let brackets):
                if scalar == " " || scalar == "\t" { return true }
                if scalar == "[", brackets == 1 {
                    self.state = .headerKey(brackets: 2)
                    return true
                }
                let bare =
                    ("0"..."9").contains(scalar) || ("a"..."z").contains(scalar) || ("A"..."Z").contains(scalar)
                    || scalar == "_" || scalar == "-"
                guard bare || scalar == "\"" || scalar == "'" || scalar == "]" else { return false }
                self.state = .body
                return self.body(scalar)
            case .string(let quote, let multiLine, let escaped):
                if escaped {
                    self.state = .string(quote: quote, multiLine: multiLine, escaped: false)
                } else if scalar == "\\" && quote == "\"" {
                    self.state = .string(quote: quote, multiLine: multiLine, escaped: true)
                } else if scalar == quote {
                    self.quotes += 1
                    if !multiLine || self.quotes == 3 {
                        self.state = .body
                        self.quotes = 0
                    }
                    return true
                } else if scalar == "\n", !multiLine {
                    self.state = .lineStart
                }
                self.quotes = 0
                return true
            case .comment:
                if scalar == "\n" { self.state = self.depth > 0 ? .body : .lineStart }
                return true
            case .lineStart:
                if scalar == " " || scalar == "\t" || scalar == "\r" || scalar == "\n" { return true }
                if scalar == "[", self.depth == 0 {
                    self.state = .headerKey(brackets: 1)
                    return true
                }
                self.state = .body
                return self.body(scalar)
            case .body:
                return self.body(scalar)
            }
        }

        private mutating func body(_ scalar: Unicode.Scalar) -> Bool {
            if scalar == "\"" || scalar == "'" {
                // `""` then a third quote opens a multi-line string; `""` alone is an empty string.
                if self.quotes > 0, scalar == self.lastQuote {
                    self.quotes += 1
                } else {
                    self.quotes = 1
                    self.lastQuote = scalar
                }
                return true
            }
            if self.quotes == 1 || self.quotes == 3 {
                // The quote(s) before this character opened a string (three: a multi-line one).
                self.state = .string(quote: self.lastQuote, multiLine: self.quotes == 3, escaped: false)
                self.quotes = 0
                return self.next(scalar)
            }
            self.quotes = 0
            switch scalar {
            case "#": self.state = .comment
            case "[": self.depth += 1
            case "]": self.depth = max(0, self.depth - 1)
            case "\n": if self.depth == 0 { self.state = .lineStart }
            default: break
            }
            return true
        }
    }
}
