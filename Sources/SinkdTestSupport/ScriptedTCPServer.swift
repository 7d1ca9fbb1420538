import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// A TCP server on 127.0.0.1 that plays a broker gone wrong: each connection's bytes go to a
/// script, which answers as it likes (nothing, a byte at a time, a huge announced length, a flood,
/// a wrong reply). Real sockets; only the peer is scripted, for what a real server cannot be made
/// to do on cue.
public final class ScriptedTCPServer: Sendable {
    /// One accepted connection, as the script sees it.
    public final class Connection: Sendable {
        let channel: Channel
        private let receivedBytes = NIOLockedValueBox(0)

        init(channel: Channel) {
            self.channel = channel
        }

        /// Everything received on this connection so far.
        public var received: Int { receivedBytes.withLockedValue { $0 } }

        func add(_ n: Int) { receivedBytes.withLockedValue { $0 += n } }

        public func write(_ bytes: [UInt8]) {
            channel.writeAndFlush(channel.allocator.buffer(bytes: bytes), promise: nil)
        }

        public func write(_ text: String) {
            write(Array(text.utf8))
        }

        /// `bytes` one at a time, `every` apart, for as long as the connection lasts.
        public func trickle(_ bytes: [UInt8], every: TimeAmount) {
            guard let first = bytes.first else { return }
            let rest = Array(bytes.dropFirst())
            channel.writeAndFlush(channel.allocator.buffer(bytes: [first])).whenSuccess { [self] in
                channel.eventLoop.scheduleTask(in: every) { self.trickle(rest, every: every) }
            }
        }

        /// `chunk` again and again, as fast as the socket takes it, until `total` bytes or the
        /// connection ends.
        public func flood(_ chunk: [UInt8], total: Int) {
            guard total > 0, channel.isActive else { return }
            channel.writeAndFlush(channel.allocator.buffer(bytes: chunk)).whenSuccess { [self] in
                self.flood(chunk, total: total - chunk.count)
            }
        }

        public func close() {
            channel.close(promise: nil)
        }
    }

    /// Called on the connection's event loop with each chunk received (and once with [] on accept).
    public typealias Script = @Sendable (Connection, [UInt8]) -> Void

    let channel: Channel
    private let accepted = NIOLockedValueBox<[Connection]>([])
    public var port: Int { channel.localAddress!.port! }
    public var connections: [Connection] { accepted.withLockedValue { $0 } }

    public init(_ script: @escaping Script) throws {
        let accepted = self.accepted
        channel = try ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                let connection = Connection(channel: channel)
                accepted.withLockedValue { $0.append(connection) }
                return channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(Handler(connection: connection, script: script))
                }
            }
            .bind(host: "127.0.0.1", port: 0).wait()
    }

    public func stop() {
        try? channel.close().wait()
        for c in connections { c.close() }
    }

    deinit { stop() }

    final class Handler: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        let connection: Connection
        let script: Script

        init(connection: Connection, script: @escaping Script) {
            self.connection = connection
            self.script = script
        }

        func channelActive(context: ChannelHandlerContext) {
            script(connection, [])
            context.fireChannelActive()
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let bytes = Array(buffer: unwrapInboundIn(data))
            connection.add(bytes.count)
            script(connection, bytes)
        }
    }
}
