import Foundation

/// Expands secret references inside configuration strings:
///
/// - `${env:NAME}`: the environment variable NAME;
/// - `${file:/path}`: the contents of a file;
/// - `${credential:NAME}`: the file `$CREDENTIALS_DIRECTORY/NAME` that systemd's `LoadCredential=`
///   provides.
///
/// A file's single trailing newline is dropped (as `echo secret > file` leaves one).
/// `$${` stands for a literal `${`. Secret values are never part of an error message: errors name
/// the reference, never what it resolved to.
public struct SecretResolver: Sendable {
    public var environment: [String: String]

    public init(environment: [String: String]) {
        self.environment = environment
    }

    public struct Failure: Error, Sendable, Equatable {
        public var message: String
    }

    public struct Resolved: Sendable, Equatable {
        public var value: String
        /// True when the value came (partly) from a secret reference: it must not be echoed.
        public var isSecret: Bool
        /// What each reference resolved to.
        public var secretParts: [String] = []
    }

    public func resolve(_ text: String) -> Result<Resolved, Failure> {
        guard text.contains("${") else { return .success(Resolved(value: text, isSecret: false)) }
        var out = ""
        var isSecret = false
        var parts: [String] = []
        var rest = Substring(text)
        while let dollar = rest.firstIndex(of: "$") {
            out += rest[..<dollar]
            let afterDollar = rest[dollar...].dropFirst()
            if afterDollar.hasPrefix("${") {  // "$${" is a literal "${"
                out += "${"
                rest = afterDollar.dropFirst(2)
                continue
            }
            guard afterDollar.hasPrefix("{") else {
                out += "$"
                rest = afterDollar
                continue
            }
            guard let close = afterDollar.firstIndex(of: "}") else {
                return .failure(Failure(message: "unterminated secret reference '\(rest[dollar...].prefix(40))': expected '}' (write $${ for a literal ${)"))
            }
            let reference = String(afterDollar[afterDollar.index(after: afterDollar.startIndex)..<close])
            switch lookUp(reference) {
            case .success(let value):
                out += value
                parts.append(value)
            case .failure(let failure): return .failure(failure)
            }
            isSecret = true
            rest = afterDollar[afterDollar.index(after: close)...]
        }
        out += rest
        return .success(Resolved(value: out, isSecret: isSecret, secretParts: parts))
    }

    private func lookUp(_ reference: String) -> Result<String, Failure> {
        let shown = "${\(reference)}"
        guard let colon = reference.firstIndex(of: ":") else {
            return .failure(Failure(message: "secret reference \(shown): expected ${env:NAME}, ${file:/path} or ${credential:NAME}"))
        }
        let kind = reference[..<colon]
        let name = String(reference[reference.index(after: colon)...])
        guard !name.isEmpty else {
            return .failure(Failure(message: "secret reference \(shown): the name after '\(kind):' is empty"))
        }
        switch kind {
        case "env":
            guard let value = environment[name] else {
                return .failure(Failure(message: "secret reference \(shown): environment variable \(name) is not set"))
            }
            return .success(value)
        case "file":
            guard name.hasPrefix("/") else {
                return .failure(Failure(message: "secret reference \(shown): the file path must be absolute"))
            }
            return readSecretFile(name, reference: shown)
        case "credential":
            guard !name.contains("/"), name != ".", name != ".." else {
                return .failure(Failure(message: "secret reference \(shown): a credential name cannot contain '/'"))
            }
            guard let directory = environment["CREDENTIALS_DIRECTORY"], !directory.isEmpty else {
                return .failure(Failure(message: "secret reference \(shown): CREDENTIALS_DIRECTORY is not set (add LoadCredential=\(name):/path/to/secret to the unit, or use ${file:...} outside systemd)"))
            }
            return readSecretFile(directory + "/" + name, reference: shown)
        default:
            return .failure(Failure(message: "secret reference \(shown): unknown kind '\(kind)' (known: env, file, credential)"))
        }
    }

    private func readSecretFile(_ path: String, reference: String) -> Result<String, Failure> {
        guard let data = FileManager.default.contents(atPath: path) else {
            let reason = FileManager.default.fileExists(atPath: path) ? "cannot be read (check its permissions)" : "does not exist"
            return .failure(Failure(message: "secret reference \(reference): file \(path) \(reason)"))
        }
        guard var value = String(data: data, encoding: .utf8) else {
            return .failure(Failure(message: "secret reference \(reference): file \(path) is not UTF-8 text"))
        }
        // "\r\n" is a single Character in Swift.
        if value.last == "\n" || value.last == "\r\n" { value.removeLast() }
        return .success(value)
    }
}
