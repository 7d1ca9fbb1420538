/// One problem in a configuration file: where it is, which key, what was expected and what was found.
///
/// Printed as `FILE:LINE:COLUMN: KEY.PATH: MESSAGE`, the form compilers use, so editors can jump to it.
public struct ConfigError: Error, Sendable, Equatable, CustomStringConvertible {
    public var file: String
    public var line: Int?
    public var column: Int?
    /// Dotted key path such as `delivery.retry.max_backoff`; empty for file-level problems.
    public var keyPath: String
    public var message: String

    public init(file: String, line: Int? = nil, column: Int? = nil, keyPath: String, message: String) {
        self.file = file
        self.line = line
        self.column = column
        self.keyPath = keyPath
        self.message = message
    }

    public var description: String {
        var out = file
        if let line {
            out += ":\(line)"
            if let column { out += ":\(column)" }
        }
        out += ": "
        if !keyPath.isEmpty { out += keyPath + ": " }
        return out + message
    }
}

/// Every problem found in one configuration file, in file order.
public struct ConfigErrors: Error, Sendable, Equatable, CustomStringConvertible {
    public var errors: [ConfigError]

    public init(_ errors: [ConfigError]) {
        self.errors = errors
    }

    public var description: String {
        errors.map(\.description).joined(separator: "\n")
    }
}
