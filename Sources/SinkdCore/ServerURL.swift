/// What a server URL in the configuration must have for sinkd to connect with it: one of the
/// family's schemes, a host, and a port (when given) of 1-65535. Checked when the configuration is
/// read (start, check-config, reload), so `redis://h:99999` is an error naming the line rather than
/// a sink that fails at its first connect. The families' own parsers read the rest (user, password,
/// database, vhost) at connect; this only looks at the authority, the way they find it: after the
/// last '@', up to the first '/' or '?' after it.
public enum ServerURL {
    /// Why `text` is not a usable URL of one of `schemes` (e.g. ["redis"]), or nil if it is.
    /// `hostRequired: false` for the families whose host has a default (redis, postgres: 127.0.0.1).
    public static func problem(_ text: String, schemes: [String], hostRequired: Bool = true) -> String? {
        guard let scheme = schemes.first(where: { text.hasPrefix($0 + "://") }) else {
            return "it must start with " + schemes.map { $0 + "://" }.joined(separator: " or ")
        }
        var rest = Substring(text.dropFirst(scheme.count + 3))
        if let at = rest.lastIndex(of: "@") { rest = rest[rest.index(after: at)...] }
        if let end = rest.firstIndex(where: { $0 == "/" || $0 == "?" || $0 == "#" }) { rest = rest[..<end] }
        var host = rest
        var port: Substring?
        if rest.hasPrefix("[") {
            guard let close = rest.firstIndex(of: "]") else { return "the IPv6 address has no closing ']'" }
            host = rest[rest.index(after: rest.startIndex)..<close]
            let after = rest[rest.index(after: close)...]
            if !after.isEmpty {
                guard after.hasPrefix(":") else { return "unexpected \"\(after)\" after the IPv6 address" }
                port = after.dropFirst()
            }
        } else if let colon = rest.lastIndex(of: ":") {
            host = rest[..<colon]
            port = rest[rest.index(after: colon)...]
        }
        if host.isEmpty, hostRequired { return "it names no host" }
        if let port {
            guard !port.isEmpty, port.allSatisfy(\.isASCIIDigit), let n = Int(port), (1...65_535).contains(n) else {
                return "the port must be a number from 1 to 65535, got \"\(port)\""
            }
        }
        return nil
    }
}
