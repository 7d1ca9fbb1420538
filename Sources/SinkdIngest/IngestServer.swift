#if canImport(Glibc)
import Glibc
#endif
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import ServiceLifecycle
import SinkdCore
import SinkdWAL

/// Shared state of the listener: open connections and whether sinkd is shutting down.
public final class ServerState: Sendable {
    private let connections = NIOLockedValueBox(0)
    private let shuttingDown = NIOLockedValueBox(false)

    public init() {}

    public var openConnections: Int { connections.withLockedValue { $0 } }
    public var isShuttingDown: Bool { shuttingDown.withLockedValue { $0 } }
    func beginShutdown() { shuttingDown.withLockedValue { $0 = true } }
    func connectionOpened() { connections.withLockedValue { $0 += 1 } }
    func connectionClosed() { connections.withLockedValue { $0 -= 1 } }

}

public struct IngestServerError: Error, CustomStringConvertible {
    public var description: String
}

/// Answers a refused connection with one response line, then closes it.
final class RefusingHandler: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    let line: [UInt8]

    init(_ response: IngestResponse) {
        line = response.encoded()
    }

    func channelActive(context: ChannelHandlerContext) {
        let channel = context.channel
        context.writeAndFlush(NIOAny(context.channel.allocator.buffer(bytes: line))).whenComplete { _ in
            channel.close(promise: nil)
        }
    }
}

/// `struct ucred` of <sys/socket.h> (pid_t, uid_t, gid_t), which Glibc's Swift overlay does not
/// import without _GNU_SOURCE.
struct PeerCredentials: Sendable {
    var pid: Int32
    var uid: UInt32
    var gid: UInt32
}

/// Where the listening socket comes from: bound by sinkd, or inherited (systemd socket activation).
public enum ListenSource: Sendable {
    case path(String, mode: UInt32)
    case inherited(fd: CInt, path: String)
}

/// The ingest listener as a service: accepts connections on the Unix socket until graceful
/// shutdown, then stops accepting, answers what it read, waits until the WAL made everything
/// appended durable (the acknowledgements go out), and closes the connections.
public final class IngestService: Service, @unchecked Sendable {
    let shared: IngestContext
    let config: IngestConfig
    let source: ListenSource
    let group: EventLoopGroup
    let reserved = NIOLockedValueBox(0)
    /// `ingest.max_connections`, or fewer if the descriptor budget lowered it.
    let connectionLimit: Int
    private let refusals = NIOLockedValueBox(RateLimitedLog())
    private let channels = NIOLockedValueBox<[ObjectIdentifier: Channel]>([:])
    private let boundChannel = NIOLockedValueBox<Channel?>(nil)

    public init(
        shared: IngestContext, config: IngestConfig, source: ListenSource, group: EventLoopGroup,
        connectionLimit: Int? = nil
    ) {
        self.shared = shared
        self.connectionLimit = min(config.maxConnections, connectionLimit ?? config.maxConnections)
        self.config = config
        self.source = source
        self.group = group
    }

    /// Binds (or adopts) the socket. Separate from `run()` so that start-up can report readiness
    /// only once the socket accepts.
    public func bind() async throws {
        let bootstrap = ServerBootstrap(group: group)
            // Room for every allowed connection to arrive at once (a Conductor fleet restarting):
            // a full backlog makes a Unix-socket connect fail with EAGAIN. The kernel caps it at
            // net.core.somaxconn.
            .serverChannelOption(.backlog, value: Int32(clamping: max(256, connectionLimit)))
            .childChannelOption(.autoRead, value: false)
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .childChannelOption(.writeBufferWaterMark, value: .init(low: 32 << 10, high: 256 << 10))
            .childChannelInitializer { [self] channel in initialize(channel) }
        let channel: Channel
        switch source {
        case .path(let path, let mode):
            try Self.prepareSocketPath(path)
            channel = try await bootstrap.bind(unixDomainSocketPath: path).get()
            guard chmod(path, mode_t(mode)) == 0 else {
                throw IngestServerError(
                    description: "chmod \(String(mode, radix: 8)) \(path): \(String(cString: strerror(errno)))")
            }
        case .inherited(let fd, _):
            channel = try await bootstrap.withBoundSocket(fd).get()
        }
        boundChannel.withLockedValue { $0 = channel }
        shared.logger.info(
            "ingest socket listening", metadata: ["socket": "\(sourcePath)", "inherited": "\(isInherited)"])
    }

    var sourcePath: String {
        switch source {
        case .path(let p, _), .inherited(_, let p): p
        }
    }

    var isInherited: Bool {
        if case .inherited = source { return true }
        return false
    }

    public func run() async throws {
        if boundChannel.withLockedValue({ $0 }) == nil { try await bind() }
        try? await gracefulShutdown()
        await shutDown()
    }

    /// Stop accepting, answer new requests shutting_down, let the WAL finish, close connections.
    public func shutDown() async {
        shared.state.beginShutdown()
        if let channel = boundChannel.withLockedValue({ $0 }) {
            try? await channel.close()
            if case .path(let path, _) = source { unlink(path) }
        }
        // What was appended becomes durable and is acknowledged; the WAL itself keeps running
        // for delivery until the daemon closes it. Closing appends first means a connection
        // waiting for space is answered shutting_down, and a round held by a full disk is
        // answered wal_full, instead of the stop waiting for the disk.
        shared.wal.closeAppends()
        await shared.wal.flush()
        // The last acknowledgements are queued on the event loops; let them go out, then close.
        let open = channels.withLockedValue { Array($0.values) }
        for channel in open {
            try? await channel.eventLoop.submit {}.get()
            try? await channel.close()
        }
    }

    private func initialize(_ channel: Channel) -> EventLoopFuture<Void> {
        let id = ObjectIdentifier(channel)
        let admitted = reserved.withLockedValue { n in
            guard n < connectionLimit else { return false }
            n += 1
            return true
        }
        guard admitted else {
            refusals.withLockedValue {
                $0.log(
                    shared.logger, key: "refused", "refused an ingest connection: ingest.max_connections reached",
                    level: .warning, metadata: ["max_connections": "\(connectionLimit)"])
            }
            let what =
                connectionLimit < config.maxConnections
                ? "\(connectionLimit) connections (ingest.max_connections lowered to fit the descriptor limit)"
                : "ingest.max_connections (\(connectionLimit)) connections"
            let refusal = IngestResponse.rejected(
                IngestRejection(.tooManyConnections, "sinkd already has \(what); retry later"))
            return channel.pipeline.addHandler(RefusingHandler(refusal))
        }
        channels.withLockedValue { $0[id] = channel }
        channel.closeFuture.whenComplete { [self] _ in
            channels.withLockedValue { $0[id] = nil }
            reserved.withLockedValue { $0 -= 1 }
        }
        return checkPeer(channel).flatMap { [self] allowed in
            guard allowed else {
                let refusal = IngestResponse.rejected(
                    IngestRejection(
                        .forbidden, "this user or group may not write to sinkd (ingest.allowed_uids / allowed_gids)"))
                return channel.pipeline.addHandler(RefusingHandler(refusal))
            }
            return channel.eventLoop.makeCompletedFuture {
                let sync = channel.pipeline.syncOperations
                if config.idleTimeout > .zero {
                    try sync.addHandler(IdleStateHandler(readTimeout: .milliseconds(config.idleTimeout.milliseconds)))
                }
                try sync.addHandler(IngestConnectionHandler(shared: shared))
            }
        }
    }

    /// SO_PEERCRED: who is on the other end. Refused peers are logged with uid and pid.
    private func checkPeer(_ channel: Channel) -> EventLoopFuture<Bool> {
        guard !config.allowedUIDs.isEmpty || !config.allowedGIDs.isEmpty else {
            return channel.eventLoop.makeSucceededFuture(true)
        }
        guard let provider = channel as? SocketOptionProvider else {
            return channel.eventLoop.makeSucceededFuture(false)
        }
        let future: EventLoopFuture<PeerCredentials> = provider.unsafeGetSocketOption(
            level: .socket, name: NIOBSDSocket.Option(rawValue: SO_PEERCRED))
        return future.map { [self] cred in
            let allowed = config.allowedUIDs.contains(cred.uid) || config.allowedGIDs.contains(cred.gid)
            if !allowed {
                shared.logger.warning(
                    "refused an ingest client not in allowed_uids/allowed_gids",
                    metadata: ["uid": "\(cred.uid)", "gid": "\(cred.gid)", "pid": "\(cred.pid)"])
            }
            return allowed
        }.recover { _ in false }
    }

    /// A socket file left by a crashed sinkd is replaced; a live one (another sinkd answering)
    /// is an error, and so is a path that is not a socket.
    public static func prepareSocketPath(_ path: String) throws {
        let directory = String(path[..<(path.lastIndex(of: "/") ?? path.startIndex)])
        if !directory.isEmpty { try FileIO.makeDirectories(directory) }
        var st = stat()
        guard lstat(path, &st) == 0 else { return }
        guard (st.st_mode & S_IFMT) == S_IFSOCK else {
            throw IngestServerError(
                description: "\(path) exists and is not a socket; remove it or choose another ingest.socket")
        }
        if socketAnswers(path) {
            throw IngestServerError(description: "another process is listening on \(path) (is sinkd already running?)")
        }
        unlink(path)
    }

    static func socketAnswers(_ path: String) -> Bool {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else { return false }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        return rc == 0
    }
}
