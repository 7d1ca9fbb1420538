import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import SinkdCore
import SinkdDelivery
import SinkdTLS
import NIOSSL

/// `kafka:TOPIC`: records as Conductor's KafkaObservableQueue publishes them (key = the record id,
/// value = the payload), placed by the Java client's default partitioner (murmur2 of the key),
/// produced with acks=all by an idempotent producer, so a batch sent again after an unanswered
/// request is stored once.
///
/// One connection per broker that leads a partition, shared by the family's sinks; up to 5 batches
/// per partition on the wire at once (the broker's deduplication window), each handed its sequences
/// as it is written (KafkaProducerState). Answers settle the producer's state as they arrive; inside
/// one `send`, a batch whose answer is retriable (a new leader, NOT_ENOUGH_REPLICAS, an unanswered
/// request, out of order behind one of those) is sent again with the same sequences, in sequence
/// order, until `request_timeout`, as Kafka's own producer does.
public final class KafkaSinkFamily: SinkFamily, Sendable {
    public let name = ConfigFamily.kafka
    let config: KafkaSinkConfig
    let group: EventLoopGroup
    let logger: Logger
    private let state = NIOLockedValueBox(FamilyState())
    /// Bumped whenever the producer's state changes (an answer settled, a producer dropped).
    let changes = ChangeSignal()
    /// Held while sequences are handed out and the requests carrying them written, so that each
    /// partition's batches go on the wire in sequence order.
    private let writeLock = NIOLock()
    private let tls = NIOLockedValueBox<NIOSSLContext?>(nil)

    struct TopicMetadata: Sendable, Equatable {
        /// Leader node id by partition index (-1: no leader now).
        var leaders: [Int32]
        /// The topic's max.message.bytes (DescribeConfigs), or Kafka's default when the broker names none.
        var maxMessageBytes = KafkaSinkFamily.defaultMaxMessageBytes
        var fetchedAt = ContinuousClock.now
    }

    /// Kafka's default max.message.bytes (1 MiB + 12 bytes of log overhead).
    static let defaultMaxMessageBytes = 1_048_588

    /// Produce requests sent and the largest batch in one (bytes), for the tests.
    let batchesSent = NIOLockedValueBox<(count: Int, largest: Int)>((0, 0))

    struct FamilyState {
        var connections: [String: KafkaConnection] = [:]
        var nodes: [Int32: (host: String, port: Int)] = [:]
        var topics: [String: TopicMetadata] = [:]
        var producer = KafkaProducerState()
    }

    public init(
        config: KafkaSinkConfig, group: EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        logger: Logger = Logger(label: "sinkd.kafka")
    ) {
        self.config = config
        self.group = group
        self.logger = logger
    }

    public func limits(for address: SinkAddress, options: PipelineOptions) -> SinkLimits {
        // Kafka's default max.message.bytes is 1 MiB per batch; a larger one is split by the client.
        SinkLimits(maxBatchCount: options.batchSize, maxBatchBytes: 16 << 20, maxMessageBytes: 16 << 20)
    }

    public func makeClient(
        for address: SinkAddress, options: PipelineOptions
    ) throws(SinkConnectionError) -> any SinkClient {
        guard case .kafkaTopic(let topic) = address.target else {
            throw SinkConnectionError("not a kafka sink: \(address)")
        }
        return KafkaTopicClient(family: self, topic: topic)
    }

    public func shutdown() async {
        let all = state.withLockedValue { s -> [KafkaConnection] in
            defer { s.connections = [:] }
            return Array(s.connections.values)
        }
        for c in all { await c.close() }
    }

    var timeout: TimeAmount { .milliseconds(config.requestTimeout.milliseconds) }

    /// The connection to `host:port`, made when needed.
    func connection(host: String, port: Int) async throws(SinkConnectionError) -> KafkaConnection {
        let key = "\(host):\(port)"
        if let c = state.withLockedValue({ $0.connections[key] }), c.isUsable { return c }
        do {
            let made = try await KafkaConnection.connect(
                host: host, port: port, clientID: config.clientID, group: group, timeout: .seconds(10),
                tls: try tlsContext(), sasl: config.sasl)
            let previous = state.withLockedValue { s -> KafkaConnection? in
                defer { s.connections[key] = made }
                return s.connections[key]
            }
            // A session about to end is replaced; what it still has in flight may finish.
            if let previous { previous.isActive ? previous.close(after: timeout) : await previous.close() }
            return made
        } catch {
            // The cluster may be another one when it answers again (a broker restarted empty):
            // ask for metadata anew rather than produce by what was true before.
            state.withLockedValue { $0.topics = [:] }
            throw SinkConnectionError("kafka broker \(key): \(error)")
        }
    }

    /// The TLS context of `sinks.kafka.tls` (built once), or nil for plaintext.
    func tlsContext() throws(SinkConnectionError) -> NIOSSLContext? {
        guard let settings = config.tls else { return nil }
        if let made = tls.withLockedValue({ $0 }) { return made }
        let made = try TLSContexts.client(settings, section: "sinks.kafka.tls")
        tls.withLockedValue { $0 = made }
        return made
    }

    /// A connection to any reachable bootstrap server, in order.
    func anyConnection() async throws(SinkConnectionError) -> KafkaConnection {
        var errors: [String] = []
        for server in config.bootstrapServers {
            guard let (host, port) = KafkaSinkConfig.hostPort(server) else { continue }
            do {
                return try await connection(host: host, port: port)
            } catch {
                errors.append(error.message)
            }
        }
        throw SinkConnectionError(
            "no bootstrap server of sinks.kafka.bootstrap_servers answered: \(errors.joined(separator: "; "))")
    }

    /// The topic's partitions and leaders (cached; `refresh` asks a broker again). A topic the
    /// cluster does not have pauses the sink (topics are often made by a separate process).
    func metadata(_ topic: String, refresh: Bool) async throws(SinkConnectionError) -> TopicMetadata {
        let known = state.withLockedValue { $0.topics[topic] }
        // Asked again once older than metadata_max_age (the Java client's metadata.max.age.ms), so
        // that added partitions are noticed without a failure.
        if !refresh, let known, ContinuousClock.now - known.fetchedAt < config.metadataMaxAge { return known }
        let connection = try await anyConnection()
        guard let version = connection.version(KafkaMetadata.apiKey, supported: KafkaMetadata.versions) else {
            throw SinkConnectionError(
                "kafka broker \(connection.broker) speaks no Metadata version in \(KafkaMetadata.versions)")
        }
        let clientID = config.clientID
        let create = config.createTopics
        let payload: [UInt8]
        do {
            payload = try await connection.request(timeout: timeout) {
                KafkaMetadata.request(
                    version: version, correlationID: $0, clientID: clientID, topics: [topic],
                    allowAutoTopicCreation: create)
            }
        } catch {
            throw SinkConnectionError("kafka broker \(connection.broker): Metadata: \(error)")
        }
        let response: KafkaMetadata.Response
        do {
            response = try KafkaMetadata.response(payload, version: version)
        } catch {
            await connection.close()
            throw SinkConnectionError(
                "kafka broker \(connection.broker) sent a Metadata answer sinkd cannot read (\(error))")
        }
        guard let t = response.topics[topic] else {
            throw SinkConnectionError("kafka: the Metadata answer does not mention topic \(topic)")
        }
        switch KafkaErrorCode.kind(t.errorCode) {
        case .none:
            break
        case .refused:
            throw SinkConnectionError("kafka refused access to topic \(topic): \(KafkaErrorCode.name(t.errorCode))")
        default:
            if t.errorCode == 3 {
                throw SinkConnectionError(
                    "kafka topic \(topic) does not exist\(create ? " (and the broker did not create it)" : ""): create it, or set sinks.kafka.create_topics: true"
                )
            }
            throw SinkConnectionError("kafka: Metadata for topic \(topic): \(KafkaErrorCode.name(t.errorCode))")
        }
        guard !t.partitions.isEmpty else { throw SinkConnectionError("kafka topic \(topic) has no partitions") }
        var leaders = [Int32](repeating: -1, count: t.partitions.count)
        for p in t.partitions where p.index >= 0 && Int(p.index) < leaders.count { leaders[Int(p.index)] = p.leaderID }
        var meta = TopicMetadata(leaders: leaders)
        meta.maxMessageBytes =
            await maxMessageBytes(topic, connection: connection) ?? known?.maxMessageBytes
            ?? Self.defaultMaxMessageBytes
        if let known, known.leaders.count != leaders.count {
            logger.notice(
                "kafka topic's partition count changed: records are placed by the new count",
                metadata: ["topic": "\(topic)", "partitions": "\(known.leaders.count) → \(leaders.count)"])
        }
        state.withLockedValue { s in
            for (id, b) in response.brokers { s.nodes[id] = (b.host, Int(b.port)) }
            s.topics[topic] = meta
        }
        return meta
    }

    /// The topic's max.message.bytes by DescribeConfigs; nil when the broker does not say (no such
    /// API version, an error, no value: Tansu answers with no configs).
    func maxMessageBytes(_ topic: String, connection: KafkaConnection) async -> Int? {
        guard let version = connection.version(KafkaDescribeConfigs.apiKey, supported: KafkaDescribeConfigs.versions)
        else { return nil }
        let clientID = config.clientID
        guard
            let payload = try? await connection.request(
                timeout: timeout,
                {
                    KafkaDescribeConfigs.request(
                        version: version, correlationID: $0, clientID: clientID, topic: topic,
                        keys: ["max.message.bytes"])
                }),
            let results = try? KafkaDescribeConfigs.response(payload),
            let result = results.first(where: { $0.name == topic }), result.errorCode == 0,
            let text = result.configs["max.message.bytes"] ?? nil, let value = Int(text)
        else { return nil }
        // A hostile or broken answer cannot make batches absurd: at least one small record fits.
        return min(max(value, 1024), 1 << 30)
    }

    func node(_ id: Int32) -> (host: String, port: Int)? { state.withLockedValue { $0.nodes[id] } }

    /// The producer id and epoch (asked once; again after a reset), with its generation.
    func producer() async throws(SinkConnectionError) -> (KafkaProducerState, Int) {
        let current = state.withLockedValue { $0.producer }
        if current.hasProducer { return (current, current.generation) }
        let connection = try await anyConnection()
        let version: Int16 = connection.version(KafkaInitProducerId.apiKey, supported: 3...4) ?? 3
        let clientID = config.clientID
        let payload: [UInt8]
        do {
            payload = try await connection.request(timeout: timeout) {
                KafkaInitProducerId.request(version: version, correlationID: $0, clientID: clientID)
            }
        } catch {
            throw SinkConnectionError("kafka broker \(connection.broker): InitProducerId: \(error)")
        }
        let response: KafkaInitProducerId.Response
        do {
            response = try KafkaInitProducerId.response(payload)
        } catch {
            await connection.close()
            throw SinkConnectionError(
                "kafka broker \(connection.broker) sent an InitProducerId answer sinkd cannot read (\(error))")
        }
        guard response.errorCode == 0, response.producerID >= 0 else {
            throw SinkConnectionError(
                "kafka broker \(connection.broker) refused InitProducerId (the idempotent producer): \(KafkaErrorCode.name(response.errorCode))"
            )
        }
        let fresh = state.withLockedValue { s -> KafkaProducerState in
            if !s.producer.hasProducer {
                s.producer.reset(producerID: response.producerID, epoch: response.producerEpoch)
            }
            return s.producer
        }
        logger.info(
            "kafka idempotent producer", metadata: ["producer_id": "\(fresh.producerID)", "epoch": "\(fresh.epoch)"])
        return (fresh, fresh.generation)
    }

    /// The idempotent producer's state now (the tests look at it).
    var producerState: KafkaProducerState { state.withLockedValue { $0.producer } }

    /// Changes the producer's state and wakes whoever waits on it.
    func settle<T>(_ body: (inout KafkaProducerState) -> T) -> T {
        let value = state.withLockedValue { body(&$0.producer) }
        changes.bump()
        return value
    }

    func invalidateProducer(generation: Int) {
        settle { $0.invalidate(generation: generation) }
    }

    /// For tests: a gap of `count` sequences on `key`, as if a batch had been lost.
    func skipSequences(_ key: KafkaProducerState.PartitionKey, count: Int) {
        settle { $0.skip(key, count: count) }
    }

    /// Waits until each of `parts`' partitions has room for a new batch under `generation`, then
    /// hands them their sequences and calls `write` with them (which writes the requests carrying
    /// them), both under the write lock. nil when `generation` is not the producer's any more (ask
    /// for the producer again), or at `deadline`.
    /// `ready` is asked under the write lock first: false (a connection closed meanwhile) returns
    /// nil at once, nothing handed out.
    func admit<T>(
        _ parts: [(key: KafkaProducerState.PartitionKey, count: Int)], generation: Int,
        deadline: ContinuousClock.Instant,
        ready: () -> Bool, write: ([KafkaRecordBatch.Producer]) -> T
    ) async -> T? {
        await whenAllowed(deadline: deadline, ready: ready, write: write) { p in
            guard p.generation == generation, p.hasProducer else { return .never }
            guard p.hasRoom(parts.map(\.key)) else { return .notYet }
            return .now(parts.map { p.reserve($0.key, count: $0.count) })
        }
    }

    /// Waits until the batch at `base` on `key` is the first unacknowledged one of its partition,
    /// then calls `write` with its producer fields under the write lock. nil when the batch is not
    /// open under `generation` any more (a dropped producer: send it anew), or at `deadline`.
    func resend<T>(
        _ key: KafkaProducerState.PartitionKey, base: Int32, generation: Int, deadline: ContinuousClock.Instant,
        ready: () -> Bool, write: (KafkaRecordBatch.Producer) -> T
    ) async -> T? {
        await whenAllowed(deadline: deadline, ready: ready, write: write) { p in
            guard p.isOpen(key, base: base, generation: generation) else { return .never }
            guard p.isFirst(key, base: base, generation: generation) else { return .notYet }
            p.resending(key, base: base, generation: generation)
            return .now(p.producer(base: base))
        }
    }

    /// Under the write lock: `decide` on the producer's state; `.now` writes, `.never` gives up,
    /// `.notYet` waits for the state to change (or `deadline`) and decides again.
    private func whenAllowed<T, V>(
        deadline: ContinuousClock.Instant, ready: () -> Bool, write: (V) -> T,
        decide: (inout KafkaProducerState) -> Permission<V>
    ) async -> T? {
        while true {
            let seen = changes.version
            let written: T?? = writeLock.withLock {
                guard ready() else { return .some(nil) }
                switch state.withLockedValue({ decide(&$0.producer) }) {
                case .never: return .some(nil)
                case .notYet: return nil
                case .now(let value): return .some(write(value))
                }
            }
            if let written { return written }
            guard ContinuousClock.now < deadline else { return nil }
            await changes.wait(since: seen, until: deadline, on: group.next())
        }
    }
}

private enum Permission<V> { case never, notYet, now(V) }
