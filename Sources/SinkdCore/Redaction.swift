import Synchronization

/// The one redaction for text that leaves the process: log lines and journal fields, `sinkd
/// status`, STATUS=, dead-letter reasons. Two passes:
/// 1. every secret the configuration holds (passwords, tokens, keys, Authorization-type header
///    values, the values of `${env:}`/`${file:}`/`${credential:}` references) is replaced by
///    `(hidden)` wherever it appears, even inside a remote's error text;
/// 2. every URL's userinfo password and the values of secret-looking query parameters (`token`,
///    `password`, `key`, `signature`, `X-Amz-Credential`, ...) are hidden, for secrets the
///    configuration does not name (a URL a remote echoes back).
public enum Redaction {
    public static let hidden = "(hidden)"

    /// Query parameters whose values are hidden (compared lower-cased, `-` and `_` ignored).
    static let secretParameterWords = [
        "token", "password", "passwd", "pwd", "pass", "secret", "key", "apikey", "auth", "signature", "sig",
        "credential", "code", "session",
    ]

    static func isSecretName(_ name: String) -> Bool {
        let n = name.lowercased().filter { $0 != "-" && $0 != "_" }
        return secretParameterWords.contains { n == $0 || n.hasSuffix($0) || n.hasPrefix($0) }
            || n.contains("token") || n.contains("secret") || n.contains("password") || n.contains("authorization")
            || n == "cookie"
    }

    /// Header names whose values are secrets.
    public static func isSecretHeader(_ name: String) -> Bool {
        let n = name.lowercased()
        return n == "authorization" || n == "proxy-authorization" || n == "cookie" || isSecretName(n)
    }

    /// The secrets of `config`: what pass 1 hides.
    public static func secrets(of config: SinkdConfig) -> [String] {
        var out = config.secretValues
        func url(_ u: String) {
            if let password = userinfoPassword(u) {
                out.append(password); out.append(PercentDecoding.decode(password) ?? password)
            }
            for (name, value) in queryParameters(u) where isSecretName(name) { out.append(value) }
        }
        let s = config.sinks
        // Every family, in an exhaustive switch: a new family must say what of its section is
        // secret (docs/ADDING_A_SINK_FAMILY.md).
        for family in ConfigFamily.allCases {
            switch family {
            case .file:
                break  // a directory: nothing secret
            case .http:
                for e in s.http?.endpoints.values.sorted(by: { $0.url < $1.url }) ?? [] {
                    url(e.url)
                    for (name, value) in e.headers where isSecretHeader(name) {
                        out.append(value)
                        // "Bearer abc": the credential alone too.
                        if let space = value.lastIndex(of: " ") {
                            out.append(String(value[value.index(after: space)...]))
                        }
                    }
                }
            case .redis:
                if let r = s.redis { url(r.url) }
            case .sqs:
                if let q = s.sqs { out += [q.secretAccessKey, q.sessionToken]; url(q.endpoint) }
            case .amqp:
                for u in s.amqp?.urls ?? [] { url(u) }
            case .nats:
                if let n = s.nats { out += [n.password, n.token, n.nkeySeed]; n.servers.forEach(url) }
            case .conductor:
                if let c = s.conductor { url(c.postgresURL); if let p = c.password { out.append(p) } }
            case .kafka:
                if let k = s.kafka, let sasl = k.sasl { out.append(sasl.password) }
            }
        }
        // Short strings would hide ordinary words; longest first so that a secret containing
        // another is hidden whole.
        return Array(Set(out.filter { $0.utf8.count >= 4 })).sorted { $0.utf8.count > $1.utf8.count }
    }

    /// `text` with `secrets` and URL credentials hidden.
    public static func text(_ text: String, secrets: [String]) -> String {
        var out = text
        for secret in secrets where out.contains(secret) {
            out = out.replacing(secret, with: hidden)
        }
        return urls(in: out)
    }

    /// Pass 2: hides userinfo passwords and secret query values of every `scheme://` URL in `text`.
    public static func urls(in text: String) -> String {
        guard text.contains("://") else { return text }
        var out = ""
        var rest = Substring(text)
        while let scheme = rest.range(of: "://") {
            out += rest[..<scheme.upperBound]
            rest = rest[scheme.upperBound...]
            // The URL runs to the next space, quote or angle bracket.
            let end =
                rest.firstIndex { $0 == " " || $0 == "\"" || $0 == "'" || $0 == "<" || $0 == ">" || $0 == "\n" }
                ?? rest.endIndex
            out += redactedURLTail(String(rest[..<end]))
            rest = rest[end...]
        }
        return out + rest
    }

    /// The part of a URL after `scheme://`, with its credentials hidden.
    static func redactedURLTail(_ tail: String) -> String {
        var t = tail
        let authorityEnd = t.firstIndex { $0 == "/" || $0 == "?" || $0 == "#" } ?? t.endIndex
        if let at = t[..<authorityEnd].lastIndex(of: "@"), let colon = t[..<at].firstIndex(of: ":") {
            t = String(t[...colon]) + hidden + String(t[at...])
        }
        guard let q = t.firstIndex(of: "?") else { return t }
        let head = t[...q]
        let fragmentStart = t[q...].firstIndex(of: "#") ?? t.endIndex
        let query = t[t.index(after: q)..<fragmentStart]
        let parts = query.split(separator: "&", omittingEmptySubsequences: false).map { part -> String in
            guard let eq = part.firstIndex(of: "="), isSecretName(String(part[..<eq])) else { return String(part) }
            return String(part[...eq]) + hidden
        }
        return head + parts.joined(separator: "&") + t[fragmentStart...]
    }

    static func userinfoPassword(_ url: String) -> String? {
        guard let scheme = url.range(of: "://") else { return nil }
        let rest = url[scheme.upperBound...]
        let authorityEnd = rest.firstIndex { $0 == "/" || $0 == "?" || $0 == "#" } ?? rest.endIndex
        guard let at = rest[..<authorityEnd].lastIndex(of: "@"), let colon = rest[..<at].firstIndex(of: ":") else {
            return nil
        }
        let password = String(rest[rest.index(after: colon)..<at])
        return password.isEmpty ? nil : password
    }

    static func queryParameters(_ url: String) -> [(String, String)] {
        guard let q = url.firstIndex(of: "?") else { return [] }
        let query = String(url[url.index(after: q)...].prefix { $0 != "#" })
        var out: [(String, String)] = []
        for part in query.split(separator: "&") {
            guard let eq = part.firstIndex(of: "=") else { continue }
            let value = String(part[part.index(after: eq)...])
            if !value.isEmpty { out.append((String(part[..<eq]), value)) }
        }
        return out
    }
}

/// The process's redaction, with the running configuration's secrets (set at start and by
/// every reload). Log handlers, the status and the dead-letter store call it.
public final class Redactor: Sendable {
    public static let shared = Redactor()
    private let secrets = Mutex<[String]>([])

    /// Hides the secrets of `configs` from now on (a reload passes the old configuration too:
    /// errors from its connections may still be on their way).
    public func use(_ configs: SinkdConfig...) {
        let found = Array(Set(configs.flatMap(Redaction.secrets(of:)))).sorted { $0.utf8.count > $1.utf8.count }
        secrets.withLock { $0 = found }
    }

    public func redact(_ text: String) -> String {
        let known = secrets.withLock { $0 }
        return Redaction.text(text, secrets: known)
    }
}
