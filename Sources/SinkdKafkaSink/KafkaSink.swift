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
/// One connection per broker that leads a partition, shared by the family's sinks; one batch at a
/// time per partition (sequences advance only on acknowledgement); inside one `send`, a batch whose
/// answer is retriable (a new leader, NOT_ENOUGH_REPLICAS, an unanswered request) is sent again with
/// the same sequence until `request_timeout`, as Kafka's own producer does.
public final class KafkaSinkFamily: SinkFamily, Sendable {
    public let name = ConfigFamily.kafka
    let config: KafkaSinkConfig
    let group: EventLoopGroup
    let logger: Logger
    private let state = NIOLockedValueBox(FamilyState())
    private let locks = NIOLockedValueBox<[KafkaProducerState.PartitionKey: SerialLock]>([:])
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

    public init(config: KafkaSinkConfig, group: EventLoopGroup = MultiThreadedEventLoopGroup.singleton, logger: Logger = Logger(label: "sinkd.kafka")) {
        self.config = config
        self.group = group
        self.logger = logger
    }

    public func limits(for address: SinkAddress, options: PipelineOptions) -> SinkLimits {
        // Kafka's default max.message.bytes is 1 MiB per batch; a larger one is split by the client.
        SinkLimits(maxBatchCount: options.batchSize, maxBatchBytes: 16 << 20, maxMessageBytes: 16 << 20)
    }

    public func makeClient(for address: SinkAddress, options: PipelineOptions) throws(SinkConnectionError) -> any SinkClient {
        guard case .kafkaTopic(let topic) = address.target else { throw SinkConnectionError("not a kafka sink: \(address)") }
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

    func lock(_ key: KafkaProducerState.PartitionKey) -> SerialLock {
        locks.withLockedValue { l in
            if let existing = l[key] { return existing }
            let made = SerialLock()
            l[key] = made
            return made
        }
    }

    /// The connection to `host:port`, made when needed.
    func connection(host: String, port: Int) async throws(SinkConnectionError) -> KafkaConnection {
        let key = "\(host):\(port)"
        if let c = state.withLockedValue({ $0.connections[key] }), c.isUsable { return c }
        do {
            let made = try await KafkaConnection.connect(host: host, port: port, clientID: config.clientID, group: group, timeout: .seconds(10),
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
        throw SinkConnectionError("no bootstrap server of sinks.kafka.bootstrap_servers answered: \(errors.joined(separator: "; "))")
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
            throw SinkConnectionError("kafka broker \(connection.broker) speaks no Metadata version in \(KafkaMetadata.versions)")
        }
        let clientID = config.clientID
        let create = config.createTopics
        let payload: [UInt8]
        do {
            payload = try await connection.request(timeout: timeout) { KafkaMetadata.request(version: version, correlationID: $0, clientID: clientID, topics: [topic], allowAutoTopicCreation: create) }
        } catch {
            throw SinkConnectionError("kafka broker \(connection.broker): Metadata: \(error)")
        }
        let response: KafkaMetadata.Response
        do {
            response = try KafkaMetadata.response(payload, version: version)
        } catch {
            await connection.close()
            throw SinkConnectionError("kafka broker \(connection.broker) sent a Metadata answer sinkd cannot read (\(error))")
        }
        guard let t = response.topics[topic] else { throw SinkConnectionError("kafka: the Metadata answer does not mention topic \(topic)") }
        switch KafkaErrorCode.kind(t.errorCode) {
        case .none:
            break
        case .refused:
            throw SinkConnectionError("kafka refused access to topic \(topic): \(KafkaErrorCode.name(t.errorCode))")
        default:
            if t.errorCode == 3 {
                throw SinkConnectionError("kafka topic \(topic) does not exist\(create ? " (and the broker did not create it)" : ""): create it, or set sinks.kafka.create_topics: true")
            }
            throw SinkConnectionError("kafka: Metadata for topic \(topic): \(KafkaErrorCode.name(t.errorCode))")
        }
        guard !t.partitions.isEmpty else { throw SinkConnectionError("kafka topic \(topic) has no partitions") }
        var leaders = [Int32](repeating: -1, count: t.partitions.count)
        for p in t.partitions where p.index >= 0 && Int(p.index) < leaders.count { leaders[Int(p.index)] = p.leaderID }
        var meta = TopicMetadata(leaders: leaders)
        meta.maxMessageBytes = await maxMessageBytes(topic, connection: connection) ?? known?.maxMessageBytes ?? Self.defaultMaxMessageBytes
        if let known, known.leaders.count != leaders.count {
            logger.notice("kafka topic's partition count changed: records are placed by the new count", metadata: ["topic": "\(topic)", "partitions": "\(known.leaders.count) → \(leaders.count)"])
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
        guard let version = connection.version(KafkaDescribeConfigs.apiKey, supported: KafkaDescribeConfigs.versions) else { return nil }
        let clientID = config.clientID
        guard let payload = try? await connection.request(timeout: timeout, { KafkaDescribeConfigs.request(version: version, correlationID: $0, clientID: clientID, topic: topic, keys: ["max.message.bytes"]) }),
              let results = try? KafkaDescribeConfigs.response(payload),
              let result = results.first(where: { $0.name == topic }), result.errorCode == 0,
              let text = result.configs["max.message.bytes"] ?? nil, let value = Int(text) else { return nil }
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
            payload = try await connection.request(timeout: timeout) { KafkaInitProducerId.request(version: version, correlationID: $0, clientID: clientID) }
        } catch {
            throw SinkConnectionError("kafka broker \(connection.broker): InitProducerId: \(error)")
        }
        let response: KafkaInitProducerId.Response
        do {
            response = try KafkaInitProducerId.response(payload)
        } catch {
            await connection.close()
            throw SinkConnectionError("kafka broker \(connection.broker) sent an InitProducerId answer sinkd cannot read (\(error))")
        }
        guard response.errorCode == 0, response.producerID >= 0 else {
            throw SinkConnectionError("kafka broker \(connection.broker) refused InitProducerId (the idempotent producer): \(KafkaErrorCode.name(response.errorCode))")
        }
        let fresh = state.withLockedValue { s -> KafkaProducerState in
            if !s.producer.hasProducer { s.producer.reset(producerID: response.producerID, epoch: response.producerEpoch) }
            return s.producer
        }
        logger.info("kafka idempotent producer", metadata: ["producer_id": "\(fresh.producerID)", "epoch": "\(fresh.epoch)"])
        return (fresh, fresh.generation)
    }

    /// The idempotent producer's state now (the tests look at it).
    var producerState: KafkaProducerState { state.withLockedValue { $0.producer } }

    func invalidateProducer(generation: Int) {
        state.withLockedValue { $0.producer.invalidate(generation: generation) }
    }

    func acknowledged(_ key: KafkaProducerState.PartitionKey, baseSequence: Int32, count: Int, generation: Int) {
        state.withLockedValue { $0.producer.acknowledged(key, baseSequence: baseSequence, count: count, generation: generation) }
    }

    func sequence(_ key: KafkaProducerState.PartitionKey) -> KafkaRecordBatch.Producer {
        state.withLockedValue { $0.producer.producer(for: key) }
    }
}

/// A FIFO lock for one partition (one batch at a time), usable across suspension points.
final class SerialLock: Sendable {
    private let state = NIOLockedValueBox<(held: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))

    func acquire() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let now = state.withLockedValue { s -> Bool in
                if !s.held {
                    s.held = true
                    return true
                }
                s.waiters.append(c)
                return false
            }
            if now { c.resume() }
        }
    }

    func release() {
        let next = state.withLockedValue { s -> CheckedContinuation<Void, Never>? in
            if s.waiters.isEmpty {
                s.held = false
                return nil
            }
            return s.waiters.removeFirst()
        }
        next?.resume()
    }
}

struct KafkaTopicClient: SinkClient {
    let family: KafkaSinkFamily
    let topic: String

    func send(_ batch: [SequencedRecord]) async throws(SinkConnectionError) -> [DeliveryOutcome] {
        try await send(batch, queued: {})
    }

    func send(_ batch: [SequencedRecord], queued: @escaping @Sendable () -> Void) async throws(SinkConnectionError) -> [DeliveryOutcome] {
        var meta = try await family.metadata(topic, refresh: false)
        var outcomes = [DeliveryOutcome?](repeating: nil, count: batch.count)
        // Placement as the Java client's default partitioner places keyed records.
        var byPartition: [Int32: [Int]] = [:]
        for (i, item) in batch.enumerated() {
            let p = KafkaPartitioner.partition(forKey: Array(item.record.id.utf8), partitions: Int32(meta.leaders.count)) ?? 0
            byPartition[p, default: []].append(i)
        }
        let keys = byPartition.keys.sorted().map { KafkaProducerState.PartitionKey(topic: topic, partition: $0) }
        for key in keys { await family.lock(key).acquire() }
        defer { for key in keys { family.lock(key).release() } }
        let fired = NIOLockedValueBox(false)
        let raise: @Sendable () -> Void = {
            if fired.withLockedValue({ f in defer { f = true }; return !f }) { queued() }
        }
        defer { raise() }

        let deadline = ContinuousClock.now + family.config.requestTimeout
        // Work: partition → the record indices still to send there, in WAL order; one batch per
        // partition per round (a split's halves go one after the other).
        var work: [(partition: Int32, indices: [Int])] = keys.flatMap { key in
            KafkaRecordBatch.chunks(byPartition[key.partition]!, limit: meta.maxMessageBytes, size: { estimatedSize(batch[$0].record) }).map { (key.partition, $0) }
        }
        var lastError = ""
        var backoff = false
        var round = 0
        // A request that got no answer may have been stored. Its batches are sent again with the
        // same sequences (stored once); if this send gives up before an answer, the producer id is
        // dropped, so that other records never reuse those sequences (the broker would call them
        // duplicates of what it stored).
        var unresolved = Set<Int32>()
        var unresolvedGeneration = -1
        defer { if !unresolved.isEmpty { family.invalidateProducer(generation: unresolvedGeneration) } }
        while !work.isEmpty {
            round += 1
            if round > 1, ContinuousClock.now >= deadline {
                for w in work { for i in w.indices where outcomes[i] == nil { outcomes[i] = .retryable("kafka: \(lastError)") } }
                break
            }
            if backoff { try? await Task.sleep(for: .milliseconds(min(1000, 25 << min(round, 5)))) }
            backoff = false
            var seen = Set<Int32>()
            var now: [(partition: Int32, indices: [Int])] = []
            var deferred: [(partition: Int32, indices: [Int])] = []
            for w in work {
                if seen.insert(w.partition).inserted { now.append(w) } else { deferred.append(w) }
            }
            let (_, generation) = try await family.producer()
            if unresolvedGeneration != generation { unresolved = [] }  // a new producer: no sequence reused
            var perLeader: [Int32: [(partition: Int32, indices: [Int], base: KafkaRecordBatch.Producer)]] = [:]
            for w in now {
                let leader = Int(w.partition) < meta.leaders.count ? meta.leaders[Int(w.partition)] : -1
                perLeader[leader, default: []].append((w.partition, w.indices, family.sequence(KafkaProducerState.PartitionKey(topic: topic, partition: w.partition))))
            }
            var next: [(partition: Int32, indices: [Int])] = []
            var refresh = false
            var unanswered = false
            for (leader, parts) in perLeader.sorted(by: { $0.key < $1.key }) {
                guard leader >= 0, let node = family.node(leader) else {
                    lastError = "no leader for partitions \(parts.map(\.partition)) of \(topic)"
                    refresh = true
                    backoff = true
                    next += parts.map { ($0.partition, $0.indices) }
                    continue
                }
                let connection = try await family.connection(host: node.host, port: node.port)
                guard let version = connection.version(KafkaProduce.apiKey, supported: KafkaProduce.versions) else {
                    throw SinkConnectionError("kafka broker \(connection.broker) speaks no Produce version in \(KafkaProduce.versions)")
                }
                let now = Int64(Date().timeIntervalSince1970 * 1000)
                let compression: KafkaRecordBatch.Compression = family.config.compression == .gzip ? .gzip : .none
                let encoded = parts.map { part in
                    (partition: part.partition, records: KafkaRecordBatch.encode(part.indices.map { record(batch[$0].record, timestampMillis: now) }, producer: part.base, compression: compression))
                }
                let clientID = family.config.clientID
                let largest = encoded.map(\.records.count).max() ?? 0
                family.batchesSent.withLockedValue { $0 = ($0.count + encoded.count, max($0.largest, largest)) }
                let timeoutMillis = Int32(clamping: family.config.requestTimeout.milliseconds)
                let topic = self.topic
                let payload: [UInt8]
                do {
                    payload = try await connection.request(timeout: family.timeout, { KafkaProduce.request(version: version, correlationID: $0, clientID: clientID, timeoutMillis: timeoutMillis, topic: topic, batches: encoded) }, queued: raise)
                } catch {
                    await connection.close()
                    lastError = "broker \(connection.broker): \(error)"
                    unanswered = true
                    refresh = true
                    for p in parts { unresolved.insert(p.partition) }
                    backoff = true
                    next += parts.map { ($0.partition, $0.indices) }
                    continue
                }
                let response: KafkaProduce.Response
                do {
                    response = try KafkaProduce.response(payload, version: version)
                } catch {
                    await connection.close()
                    lastError = "broker \(connection.broker) sent a Produce answer sinkd cannot read (\(error))"
                    unanswered = true
                    for p in parts { unresolved.insert(p.partition) }
                    backoff = true
                    next += parts.map { ($0.partition, $0.indices) }
                    continue
                }
                let results = Dictionary((response.results[topic] ?? []).map { ($0.partition, $0) }, uniquingKeysWith: { a, _ in a })
                for part in parts {
                    let key = KafkaProducerState.PartitionKey(topic: topic, partition: part.partition)
                    guard let result = results[part.partition] else {
                        lastError = "broker \(connection.broker) did not answer for partition \(part.partition)"
                        unanswered = true
                        unresolved.insert(part.partition)
                        backoff = true
                        next.append((part.partition, part.indices))
                        continue
                    }
                    switch KafkaProduceDecision.decide(errorCode: result.errorCode, count: part.indices.count, recordErrors: result.recordErrors, message: result.errorMessage) {
                    case .delivered:
                        unresolved.remove(part.partition)
                        family.acknowledged(key, baseSequence: part.base.baseSequence, count: part.indices.count, generation: generation)
                        for i in part.indices { outcomes[i] = .delivered }
                    case .retry(let refreshMetadata, let reason):
                        refresh = refresh || refreshMetadata
                        lastError = "partition \(part.partition): \(reason)"
                        backoff = true
                        next.append((part.partition, part.indices))
                    case .resetProducer(let reason):
                        family.invalidateProducer(generation: generation)
                        lastError = "partition \(part.partition): \(reason)"
                        next.append((part.partition, part.indices))
                    case .split(let reason):
                        lastError = "partition \(part.partition): \(reason)"
                        let half = part.indices.count / 2
                        next.append((part.partition, Array(part.indices[..<half])))
                        next.append((part.partition, Array(part.indices[half...])))
                    case .permanent(let indices, let reason):
                        let refused = Set(indices.map { part.indices[$0] })
                        unresolved.remove(part.partition)
                        for i in refused { outcomes[i] = .permanent("kafka topic \(topic) partition \(part.partition): \(reason)") }
                        let rest = part.indices.filter { !refused.contains($0) }
                        if !rest.isEmpty { next.append((part.partition, rest)) }
                    case .pause(let reason):
                        throw SinkConnectionError("kafka refused producing to \(topic): \(reason)")
                    }
                }
            }
            if unanswered { unresolvedGeneration = generation }
            // What is sent again goes before what waited (WAL order per partition).
            work = next + deferred
            if refresh { meta = (try? await family.metadata(topic, refresh: true)) ?? meta }
        }
        return outcomes.map { $0 ?? .retryable("kafka: not sent") }
    }

    /// KafkaRecordBatch.estimatedSize of `record(r)`, without building it.
    func estimatedSize(_ r: EventRecord) -> Int {
        var size = 36 + r.id.utf8.count + r.payload.count
        if family.config.headers {
            size += 10 + "sinkd-message-id".utf8.count + r.id.utf8.count
            for (name, value) in [("workflowInstanceId", r.workflowInstanceId), ("workflowType", r.workflowType), ("correlationId", r.correlationId), ("taskRefName", r.taskRefName)] {
                if let value { size += 10 + name.utf8.count + value.utf8.count }
            }
        }
        return size
    }

    func record(_ r: EventRecord, timestampMillis: Int64) -> KafkaRecord {
        var headers: [(key: String, value: [UInt8]?)] = []
        if family.config.headers {
            headers.append(("sinkd-message-id", Array(r.id.utf8)))
            if let v = r.workflowInstanceId { headers.append(("workflowInstanceId", Array(v.utf8))) }
            if let v = r.workflowType { headers.append(("workflowType", Array(v.utf8))) }
            if let v = r.correlationId { headers.append(("correlationId", Array(v.utf8))) }
            if let v = r.taskRefName { headers.append(("taskRefName", Array(v.utf8))) }
        }
        return KafkaRecord(key: Array(r.id.utf8), value: r.payload, headers: headers, timestampMillis: timestampMillis)
    }

    func close() async {}
}
