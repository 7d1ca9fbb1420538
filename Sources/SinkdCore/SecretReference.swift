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
                return .failure(
                    Failure(
                        message:
                            "unterminated secret reference '\(rest[dollar...].prefix(40))': expected '}' (write $${ for a literal ${)"
                    ))
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
            return .failure(
                Failure(message: "secret reference \(shown): expected ${env:NAME}, ${file:/path} or ${credential:NAME}")
            )
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
                return .failure(
                    Failure(
                        message:
                            "secret reference \(shown): CREDENTIALS_DIRECTORY is not set (add LoadCredential=\(name):/path/to/secret to the unit, or use ${file:...} outside systemd)"
                    ))
            }
            return readSecretFile(directory + "/" + name, reference: shown)
        default:
            return .failure(
                Failure(message: "secret reference \(shown): unknown kind '\(kind)' (known: env, file, credential)"))
        }
    }

    /// The most a secret file may hold. A password, token, key or certificate fits many times;
    /// a file larger than this is a mistake (a wrong path), and reading it whole could take the
    /// daemon's memory, at start, check-config and reload alike.
    public static let maxSecretBytes = 64 << 10

    /// Reads a secret file with a bound: a regular file of at most `maxSecretBytes`, read with at
    /// most that many bytes in memory; anything else (a directory, a FIFO, a device, a larger file)
    /// is refused at once with what it is and where.
    private func readSecretFile(_ path: String, reference: String) -> Result<String, Failure> {
        // O_NONBLOCK: opening a FIFO must not wait for a writer.
        let fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)
        guard fd >= 0 else {
            let reason =
                errno == ENOENT
                ? "does not exist" : "cannot be read (\(String(cString: strerror(errno))); check its permissions)"
            return .failure(Failure(message: "secret reference \(reference): file \(path) \(reason)"))
        }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else {
            return .failure(
                Failure(
                    message:
                        "secret reference \(reference): file \(path) cannot be read (\(String(cString: strerror(errno))))"
                ))
        }
        guard info.st_mode & S_IFMT == S_IFREG else {
            return .failure(Failure(message: "secret reference \(reference): \(path) is not a regular file"))
        }
        let limit = Self.maxSecretBytes
        guard info.st_size <= limit else {
            return .failure(
                Failure(
                    message:
                        "secret reference \(reference): file \(path) holds \(info.st_size) bytes; a secret is at most \(limit / 1024) KiB (is this the right file?)"
                ))
        }
        var bytes = [UInt8](repeating: 0, count: limit + 1)
        var count = 0
        while count <= limit {
            let n = bytes.withUnsafeMutableBytes { read(fd, $0.baseAddress! + count, limit + 1 - count) }
            if n < 0, errno == EINTR { continue }
            guard n >= 0 else {
                return .failure(
                    Failure(
                        message:
                            "secret reference \(reference): file \(path) cannot be read (\(String(cString: strerror(errno))))"
                    ))
            }
            if n == 0 { break }
            count += n
        }
        guard count <= limit else {
            return .failure(
                Failure(
                    message:
                        "secret reference \(reference): file \(path) holds more than \(limit / 1024) KiB; a secret is at most that (is this the right file?)"
                ))
        }
        guard var value = String(validating: bytes[..<count], as: UTF8.self) else {
            return .failure(Failure(message: "secret reference \(reference): file \(path) is not UTF-8 text"))
        }
        // "\r\n" is a single Character in Swift.
        if value.last == "\n" || value.last == "\r\n" { value.removeLast() }
        return .success(value)
    }
}
