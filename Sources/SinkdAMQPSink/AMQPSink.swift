import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL
import SinkdCore
import SinkdDelivery
import SinkdTLS

/// `amqp_queue:NAME?params` and `amqp_exchange:NAME?params` with publisher confirms.
///
/// - Each sink publishes over `pool_size` channels in confirm mode, opened on the family's
///   `connections` shared connections to the first reachable broker of `urls`.
/// - A channel declares its queue or exchange once, when it opens (unless `declare: false`).
/// - A record is delivered when a basic.ack covers its delivery tag; basic.nack → retry;
///   mandatory publishes, so a basic.return (NO_ROUTE) → permanent "unroutable".
public final class AMQPSinkFamily: SinkFamily {
    public let name = ConfigFamily.amqp
    let config: AMQPSinkConfig
    let group: EventLoopGroup
    let logger: Logger
    private let warned: NIOLockedValueBox<Set<String>> = NIOLockedValueBox([])
    let brokers: [AMQPBrokerAddress]
    let brokerError: SinkConnectionError?
    private let pool: NIOLockedValueBox<(connections: [AMQPConnection?], next: Int, nextBroker: Int)>
    private let connecting = NIOLock()
    private let tls: NIOLockedValueBox<NIOSSLContext?> = NIOLockedValueBox(nil)

    public init(
        config: AMQPSinkConfig, group: EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        logger: Logger = Logger(label: "sinkd.amqp")
    ) {
        self.config = config
        self.group = group
        self.logger = logger
        var parsed: [AMQPBrokerAddress] = []
        var error: SinkConnectionError?
        for url in config.urls {
            do { parsed.append(try AMQPBrokerAddress(url: url)) } catch let e {
                error = SinkConnectionError("sinks.amqp.urls: \(e.description)")
            }
        }
        brokers = parsed
        brokerError = parsed.isEmpty ? (error ?? SinkConnectionError("sinks.amqp.urls is empty")) : nil
        pool = NIOLockedValueBox((Array(repeating: nil, count: max(1, config.connections)), 0, 0))
    }

    public func limits(for address: SinkAddress, options: PipelineOptions) -> SinkLimits {
        // max_in_flight counts unconfirmed messages per channel; the sink has pool_size channels.
        var window = options
        window.maxInFlight = options.maxInFlight * max(1, options.poolSize)
        // RabbitMQ's default max_message_size is 128 MiB.
        return .messageWindow(window, maxBatchBytes: 16 << 20, maxMessageBytes: 128 << 20)
    }

    public func makeClient(
        for address: SinkAddress, options: PipelineOptions
    ) throws(SinkConnectionError) -> any SinkClient {
        guard case .amqp(let settings) = address.target else {
            throw SinkConnectionError("not an amqp sink: \(address)")
        }
        if let brokerError { throw brokerError }
        // Where Conductor's reading of the parameters may surprise: said once per sink.
        if !settings.notes.isEmpty, warned.withLockedValue({ $0.insert(address.identity).inserted }) {
            for note in settings.notes {
                logger.warning(
                    "AMQP sink parameter read as Conductor reads it",
                    metadata: ["sink": "\(address.identity)", "note": "\(note)"])
            }
        }
        return AMQPSinkClient(family: self, route: AMQPRoute(settings, config: config), poolSize: options.poolSize)
    }

    public func shutdown() async {
        let open = pool.withLockedValue { p -> [AMQPConnection] in
            defer { p.connections = Array(repeating: nil, count: p.connections.count) }
            return p.connections.compactMap { $0 }
        }
        for connection in open { await connection.close() }
    }

    /// A live connection of the family's pool (round robin), connecting when a slot is empty
    /// or its connection died.
    func connection() async throws(SinkConnectionError) -> AMQPConnection {
        let (slot, existing) = pool.withLockedValue { p -> (Int, AMQPConnection?) in
            let slot = p.next
            p.next = (p.next + 1) % p.connections.count
            return (slot, p.connections[slot])
        }
        if let existing, existing.isActive { return existing }
        let made = try await connect()
        let kept = pool.withLockedValue { p -> AMQPConnection in
            // Another sink may have filled the slot meanwhile: keep one, close the other.
            if let other = p.connections[slot], other.isActive { return other }
            p.connections[slot] = made
            return made
        }
        if kept !== made { await made.close() }
        return kept
    }

    /// Tries the brokers in order, starting with the one that worked last.
    private func connect() async throws(SinkConnectionError) -> AMQPConnection {
        var failures: [String] = []
        let start = pool.withLockedValue { $0.nextBroker }
        for k in 0..<brokers.count {
            let i = (start + k) % brokers.count
            let broker = brokers[i]
            do {
                let context = broker.tls ? try tlsContext() : nil
                let connection = try await AMQPConnection.connect(
                    to: broker, tls: context, heartbeat: UInt16(clamping: config.heartbeat.components.seconds),
                    version: SinkdVersion.version,
                    group: group, timeout: .seconds(5))
                pool.withLockedValue { $0.nextBroker = i }
                return connection
            } catch let error as SinkConnectionError {
                failures.append("\(broker): \(error.message)")
            } catch {
                failures.append("\(broker): \(error)")
            }
        }
        throw SinkConnectionError("cannot connect to any AMQP broker: " + failures.joined(separator: "; "))
    }

    func tlsContext() throws(SinkConnectionError) -> NIOSSLContext {
        if let made = tls.withLockedValue({ $0 }) { return made }
        let made = try TLSContexts.client(config.tls, section: "sinks.amqp.tls")
        tls.withLockedValue { $0 = made }
        return made
    }
}

/// Where a sink's messages go and what is declared first, from its settings and the family's.
struct AMQPRoute: Sendable, Equatable {
    var exchange: String
    var routingKey: String
    var declarations: [AMQPMethod]
    var deliveryMode: UInt8
    var contentType: String
    var contentEncoding: String
    var description: String

    init(_ s: AMQPSettings, config: AMQPSinkConfig) {
        deliveryMode = s.deliveryMode
        contentType = config.contentType
        contentEncoding = config.contentEncoding
        switch s.kind {
        case .queue:
            exchange = ""
            routingKey = s.name
            var arguments = AMQPTable()
            // As Conductor declares it: x-queue-type always (classic unless configured), so that a
            // broker comparing arguments sees one declaration from both (issue 20, item 7).
            if let p = s.maxPriority { arguments.entries.append(("x-max-priority", .int32(Int32(p)))) }
            arguments.entries.append(("x-queue-type", .string(config.queueType.rawValue)))
            declarations = [
                .queueDeclare(
                    queue: s.name, passive: false, durable: s.durable, exclusive: s.exclusive, autoDelete: s.autoDelete,
                    noWait: false, arguments: arguments)
            ]
            description = "queue '\(s.name)'"
        case .exchange:
            exchange = s.name
            routingKey = s.routingKey
            // Conductor passes its arguments (x-max-priority when given) to the exchange declaration too.
            var arguments = AMQPTable()
            if let p = s.maxPriority { arguments.entries.append(("x-max-priority", .int32(Int32(p)))) }
            declarations = [
                .exchangeDeclare(
                    exchange: s.name, type: s.exchangeType, passive: false, durable: s.durable,
                    autoDelete: s.autoDelete,
                    internal: false, noWait: false, arguments: arguments)
            ]
            description = "exchange '\(s.name)' (\(s.exchangeType)) with routing key '\(s.routingKey)'"
        }
        if !config.declare { declarations = [] }
    }

    /// The properties Conductor sets (message-id and correlation-id = id, content type and
    /// encoding, delivery mode) plus timestamp, priority and the workflow headers when present.
    func properties(_ r: EventRecord) -> AMQPProperties {
        var p = AMQPProperties()
        p.contentType = contentType
        p.contentEncoding = contentEncoding
        p.deliveryMode = deliveryMode
        p.messageID = r.id
        p.correlationID = r.id
        if r.acceptedAtMillis > 0 { p.timestamp = r.acceptedAtMillis / 1000 }
        p.priority = r.priority
        var headers: [(String, AMQPFieldValue)] = []
        if let v = r.workflowInstanceId { headers.append(("workflowInstanceId", .string(v))) }
        if let v = r.workflowType { headers.append(("workflowType", .string(v))) }
        if let v = r.correlationId { headers.append(("correlationId", .string(v))) }
        if !headers.isEmpty { p.headers = AMQPTable(headers) }
        return p
    }
}

final class AMQPSinkClient: SinkClient, Sendable {
    let family: AMQPSinkFamily
    let route: AMQPRoute
    private let slots: NIOLockedValueBox<(channels: [(AMQPConnection, UInt16)?], next: Int)>

    init(family: AMQPSinkFamily, route: AMQPRoute, poolSize: Int) {
        self.family = family
        self.route = route
        self.slots = NIOLockedValueBox((Array(repeating: nil, count: max(1, poolSize)), 0))
    }

    func send(_ batch: [SequencedRecord]) async throws(SinkConnectionError) -> [DeliveryOutcome] {
        try await send(batch, queued: {})
    }

    /// Published on the slot's channel; `queued` once the publishes are queued on the connection
    /// (one channel keeps them in order: with `pool_size: 1`, batches arrive in WAL order).
    func send(
        _ batch: [SequencedRecord], queued: @escaping @Sendable () -> Void
    ) async throws(SinkConnectionError) -> [DeliveryOutcome] {
        let (slot, existing) = slots.withLockedValue { s -> (Int, (AMQPConnection, UInt16)?) in
            let slot = s.next
            s.next = (s.next + 1) % s.channels.count
            return (slot, s.channels[slot])
        }
        let connection: AMQPConnection
        let channel: UInt16
        if let (c, id) = existing, c.isActive {
            (connection, channel) = (c, id)
        } else {
            connection = try await family.connection()
            do {
                channel = try await connection.openChannel(declarations: route.declarations)
            } catch let closed as AMQPChannelClosed {
                // 406 PRECONDITION_FAILED: the queue or exchange exists with other settings
                // (durable, type, arguments). That will not change by retrying.
                let reason = "RabbitMQ refused to declare \(route.description): \(closed.code) \(closed.text)"
                family.logger.error("declaration refused", metadata: ["error": "\(reason)"])
                if closed.code == 406 { return batch.map { _ in .permanent(reason) } }
                return batch.map { _ in .retryable(reason) }
            } catch {
                throw SinkConnectionError("\(connection.broker): \(error)")
            }
            slots.withLockedValue { $0.channels[slot] = (connection, channel) }
        }
        if let reason = connection.blockedReason {
            // Publishing now would only wait; the sink pauses until the alarm clears.
            throw SinkConnectionError("RabbitMQ blocked publishing (\(reason)): waiting for connection.unblocked")
        }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(batch.reduce(0) { $0 + $1.record.payload.count + 200 })
        for item in batch {
            AMQPFrameEncoder.appendPublish(
                channel: channel, exchange: route.exchange, routingKey: route.routingKey, mandatory: true,
                properties: route.properties(item.record), body: item.record.payload,
                frameMax: Int(connection.tuning.frameMax), to: &bytes)
        }
        let resolutions: [AMQPChannelStateMachine.Resolution]
        do {
            resolutions = try await connection.publish(
                channel: channel, bytes: bytes, messageIDs: batch.map(\.record.id),
                confirmTimeout: TimeAmount(family.config.confirmTimeout), queued: queued)
        } catch let closed as AMQPChannelClosed {
            slots.withLockedValue {
                if $0.channels[slot]?.1 == channel, $0.channels[slot]?.0 === connection { $0.channels[slot] = nil }
            }
            // e.g. 404 NOT_FOUND: the exchange does not exist (declare: false). Retried: it may be created.
            return batch.map { _ in .retryable("\(route.description): \(closed)") }
        } catch {
            slots.withLockedValue { if $0.channels[slot]?.0 === connection { $0.channels[slot] = nil } }
            throw SinkConnectionError("\(connection.broker): \(error)")
        }
        return resolutions.map { resolution in
            switch resolution {
            case .acked: .delivered
            case .nacked: .retryable("RabbitMQ nacked the message (basic.nack)")
            case .returned(let code, let text):
                .permanent("unroutable: \(route.description) routed it nowhere (\(code) \(text))")
            }
        }
    }

    func close() async {
        let open = slots.withLockedValue { s -> [(AMQPConnection, UInt16)] in
            defer { s.channels = Array(repeating: nil, count: s.channels.count) }
            return s.channels.compactMap { $0 }
        }
        // The connections are the family's: only the channels close.
        for (connection, id) in open { connection.closeChannel(id) }
    }
}
