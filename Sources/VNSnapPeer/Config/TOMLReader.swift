import TOMLKit

/// Reads one TOML table with typed accessors that name the key in every error, and refuses unknown keys.
struct TOMLReader {
    let table: TOMLTable
    let path: String
    let prefix: String
    private var known: Set<String> = []

    init(table: TOMLTable, path: String, prefix: String) {
        self.table = table
        self.path = path
        self.prefix = prefix
    }

    func keyPath(_ key: String) -> String { self.prefix.isEmpty ? key : "\(self.prefix).\(key)" }

    func error(_ key: String?, _ message: String) -> ConfigError {
        ConfigError(
            path: self.path,
            key: key.map(self.keyPath) ?? (self.prefix.isEmpty ? nil : self.prefix),
            message: message
        )
    }

    mutating func string(_ key: String) throws(ConfigError) -> String? {
        self.known.insert(key)
        guard let value = self.table[key] else { return nil }
        guard let string = value.string else {
            throw self.error(key, "expected a string, found \(value.type)")
        }
        return string
    }

    mutating func requiredString(_ key: String) throws(ConfigError) -> String {
        guard let value = try self.string(key) else { throw self.error(key, "missing (required)") }
        guard !value.isEmpty else { throw self.error(key, "must not be empty") }
        return value
    }

    mutating func int(_ key: String) throws(ConfigError) -> Int? {
        self.known.insert(key)
        guard let value = self.table[key] else { return nil }
        guard let int = value.int else { throw self.error(key, "expected an integer, found \(value.type)") }
        return int
    }

    mutating func bool(_ key: String) throws(ConfigError) -> Bool? {
        self.known.insert(key)
        guard let value = self.table[key] else { return nil }
        guard let bool = value.bool else { throw self.error(key, "expected true or false, found \(value.type)") }
        return bool
    }

    /// A number: a float or an integer.
    mutating func double(_ key: String) throws(ConfigError) -> Double? {
        self.known.insert(key)
        guard let value = self.table[key] else { return nil }
        if let double = value.double { return double }
        guard let int = value.int else { throw self.error(key, "expected a number, found \(value.type)") }
        return Double(int)
    }

    /// Whether the table has `key` at all.
    func contains(_ key: String) -> Bool { self.table[key] != nil }

    /// An empty table standing for one the file left out, so its defaults apply.
    func emptyTable(_ key: String) -> TOMLReader {
        TOMLReader(table: TOMLTable(), path: self.path, prefix: self.keyPath(key))
    }

    mutating func stringArray(_ key: String) throws(ConfigError) -> [String]? {
        self.known.insert(key)
        guard let value = self.table[key] else { return nil }
        guard let array = value.array else {
            throw self.error(key, "expected an array of strings, found \(value.type)")
        }
        var result: [String] = []
        for (index, element) in array.enumerated() {
            guard let string = element.string else {
                throw self.error("\(key)[\(index)]", "expected a string, found \(element.type)")
            }
            result.append(string)
        }
        return result
    }

    mutating func table(_ key: String) throws(ConfigError) -> TOMLReader? {
        self.known.insert(key)
        guard let value = self.table[key] else { return nil }
        guard let table = value.table else { throw self.error(key, "expected a table, found \(value.type)") }
        return TOMLReader(table: table, path: self.path, prefix: self.keyPath(key))
    }

    /// An array of tables (`[[key]]`), each with its index in the key path.
    mutating func tables(_ key: String) throws(ConfigError) -> [TOMLReader] {
        self.known.insert(key)
        guard let value = self.table[key] else { return [] }
        guard let array = value.array else { throw self.error(key, "expected an array of tables ([[\(key)]])") }
        var result: [TOMLReader] = []
        for (index, element) in array.enumerated() {
            guard let table = element.table else {
                throw self.error("\(key)[\(index)]", "expected a table, found \(element.type)")
            }
            result.append(TOMLReader(table: table, path: self.path, prefix: "\(self.keyPath(key))[\(index)]"))
        }
        return result
    }

    /// Refuses keys nobody asked for: a misspelt key is an error, not a silently ignored setting.
    func rejectUnknownKeys() throws(ConfigError) {
        for key in self.table.keys.sorted() where !self.known.contains(key) {
            throw self.error(key, "unknown key")
        }
    }
}
