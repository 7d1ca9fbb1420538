import NIOConcurrencyHelpers
import SinkdDelivery

/// One server of `sinks.nats.servers`: `nats://[user:password@|token@]host[:port]`,
/// `tls://host[:port]` (TLS required) or `host:port` (as INFO's connect_urls list them).
public struct NATSServerAddress: Sendable, Hashable, CustomStringConvertible {
    public var host: String
    public var port: Int
    public var tls: Bool
    public var user: String?
    public var password: String?
    public var token: String?

    public init(host: String, port: Int = 4222, tls: Bool = false) {
        self.host = host
        self.port = port
        self.tls = tls
    }

    public init(parsing text: String) throws(SinkConnectionError) {
        var rest = Substring(text)
        tls = false
        if rest.hasPrefix("nats://") {
            rest = rest.dropFirst("nats://".count)
        } else if rest.hasPrefix("tls://") {
            rest = rest.dropFirst("tls://".count)
            tls = true
        }
        if let at = rest.lastIndex(of: "@") {
            let userInfo = rest[..<at]
            rest = rest[rest.index(after: at)...]
            if let colon = userInfo.firstIndex(of: ":") {
                user = String(userInfo[..<colon])
                password = String(userInfo[userInfo.index(after: colon)...])
            } else if !userInfo.isEmpty {
                token = String(userInfo)
            }
        }
        if let slash = rest.firstIndex(of: "/") { rest = rest[..<slash] }
        port = 4222
        if rest.hasPrefix("["), let close = rest.firstIndex(of: "]") {  // [::1]:4222
            host = String(rest[rest.index(after: rest.startIndex)..<close])
            rest = rest[rest.index(after: close)...]
            if rest.hasPrefix(":") {
                guard let p = Int(rest.dropFirst()), (1...65_535).contains(p) else {
                    throw SinkConnectionError("nats server '\(text)': bad port")
                }
                port = p
            }
        } else if let colon = rest.lastIndex(of: ":") {
            guard let p = Int(rest[rest.index(after: colon)...]), (1...65_535).contains(p) else {
                throw SinkConnectionError("nats server '\(text)': bad port")
            }
            port = p
            host = String(rest[..<colon])
        } else {
            host = String(rest)
        }
        guard !host.isEmpty else { throw SinkConnectionError("nats server '\(text)': no host") }
    }

    public var description: String { "\(tls ? "tls" : "nats")://\(host.contains(":") ? "[\(host)]" : host):\(port)" }

    /// The same server without credentials (what identifies it in a list).
    var endpoint: NATSServerAddress { NATSServerAddress(host: host, port: port, tls: tls) }
}

/// The servers to try, in order: the configured ones, then those the cluster announced in INFO's
/// connect_urls. Connecting starts after the server used last, so a failed or lame-duck server is
/// tried last.
final class NATSServerList: Sendable {
    private let state: NIOLockedValueBox<(servers: [NATSServerAddress], next: Int)>

    init(_ configured: [NATSServerAddress]) {
        state = NIOLockedValueBox((configured, 0))
    }

    var servers: [NATSServerAddress] { state.withLockedValue { $0.servers } }

    /// Every server once, starting with the next one to try.
    func rotation() -> [NATSServerAddress] {
        state.withLockedValue { s in
            let n = s.servers.count
            return (0..<n).map { s.servers[(s.next + $0) % n] }
        }
    }

    /// `server` worked: the next connection attempt starts after it.
    func used(_ server: NATSServerAddress) {
        state.withLockedValue { s in
            if let i = s.servers.firstIndex(where: { $0.endpoint == server.endpoint }) {
                s.next = (i + 1) % s.servers.count
            }
        }
    }

    /// Adds the cluster members INFO announced (`host:port`), keeping the scheme of the
    /// configured servers (TLS stays TLS).
    func discovered(_ urls: [String], tls: Bool) {
        let found = urls.compactMap { try? NATSServerAddress(parsing: $0) }.map {
            NATSServerAddress(host: $0.host, port: $0.port, tls: tls || $0.tls)
        }
        state.withLockedValue { s in
            for server in found where !s.servers.contains(where: { $0.endpoint == server.endpoint }) {
                s.servers.append(server)
            }
        }
    }
}
