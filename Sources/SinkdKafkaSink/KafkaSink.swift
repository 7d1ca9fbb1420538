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
    func admit<T>(_ parts: [(key: KafkaProducerState.PartitionKey, count: Int)], generation: Int, deadline: ContinuousClock.Instant,
                  ready: () -> Bool, write: ([KafkaRecordBatch.Producer]) -> T) async -> T? {
        await whenAllowed(deadline: deadline, ready: ready, write: write) { p in
            guard p.generation == generation, p.hasProducer else { return .never }
            guard p.hasRoom(parts.map(\.key)) else { return .notYet }
            return .now(parts.map { p.reserve($0.key, count: $0.count) })
        }
    }

    /// Waits until the batch at `base` on `key` is the first unacknowledged one of its partition,
    /// then calls `write` with its producer fields under the write lock. nil when the batch is not
    /// open under `generation` any more (a dropped producer: send it anew), or at `deadline`.
    func resend<T>(_ key: KafkaProducerState.PartitionKey, base: Int32, generation: Int, deadline: ContinuousClock.Instant,
                   ready: () -> Bool, write: (KafkaRecordBatch.Producer) -> T) async -> T? {
        await whenAllowed(deadline: deadline, ready: ready, write: write) { p in
            guard p.isOpen(key, base: base, generation: generation) else { return .never }
            guard p.isFirst(key, base: base, generation: generation) else { return .notYet }
            p.resending(key, base: base, generation: generation)
            return .now(p.producer(base: base))
        }
    }

    /// Under the write lock: `decide` on the producer's state; `.now` writes, `.never` gives up,
    /// `.notYet` waits for the state to change (or `deadline`) and decides again.
    private func whenAllowed<T, V>(deadline: ContinuousClock.Instant, ready: () -> Bool, write: (V) -> T,
                                   decide: (inout KafkaProducerState) -> Permission<V>) async -> T? {
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


/// A version number and the tasks waiting for it to change, usable across suspension points.
final class ChangeSignal: Sendable {
    private struct State {
        var version: UInt64 = 0
        var nextWaiter: UInt64 = 0
        var waiters: [UInt64: CheckedContinuation<Void, Never>] = [:]
    }
    private let state = NIOLockedValueBox(State())

    var version: UInt64 { state.withLockedValue { $0.version } }

    func bump() {
        let waiting = state.withLockedValue { s -> [CheckedContinuation<Void, Never>] in
            s.version &+= 1
            defer { s.waiters = [:] }
            return Array(s.waiters.values)
        }
        for w in waiting { w.resume() }
    }

    /// Returns once the version is not `seen` any more, or at `deadline`.
    func wait(since seen: UInt64, until deadline: ContinuousClock.Instant, on loop: EventLoop) async {
        let timer = NIOLockedValueBox<Scheduled<Void>?>(nil)
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let id = state.withLockedValue { s -> UInt64? in
                guard s.version == seen else { return nil }
                s.nextWaiter &+= 1
                s.waiters[s.nextWaiter] = c
                return s.nextWaiter
            }
            guard let id else { return c.resume() }
            let scheduled = loop.scheduleTask(in: TimeAmount(max(.zero, ContinuousClock.now.duration(to: deadline)))) { [state] in
                let waiter = state.withLockedValue { $0.waiters.removeValue(forKey: id) }
                waiter?.resume()
            }
            timer.withLockedValue { $0 = scheduled }
        }
        // Woken by a change: the deadline's task is not needed any more.
        timer.withLockedValue { $0?.cancel() }
    }
}

struct KafkaTopicClient: SinkClient {
    let family: KafkaSinkFamily
    let topic: String

    func send(_ batch: [SequencedRecord]) async throws(SinkConnectionError) -> [DeliveryOutcome] {
        try await send(batch, queued: {})
    }

    /// Records of one partition sent as one record batch: `base` is its first sequence once it was
    /// handed sequences under `generation` (nil: not yet, or to be handed anew).
    struct Part {
        var partition: Int32
        var indices: [Int]
        var base: Int32?
        var generation = -1
    }

    /// What one part's answer means, decided (and the producer's state settled) as it arrives.
    enum PartAnswer: Sendable {
        case delivered
        /// Not stored (or no answer): sent again with the same sequences, in turn.
        case resend(reason: String, refresh: Bool, backoff: Bool)
        /// Too large: sent again in two halves, the second from `second`.
        case split(second: Int32, reason: String)
        /// These records (indices in the part) can never be stored; the rest is sent anew.
        case permanent(indices: [Int], reason: String)
        /// The producer was dropped: the whole part is sent anew under the next one.
        case anew(reason: String)
        case pause(reason: String)
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
        let fired = NIOLockedValueBox(false)
        let raise: @Sendable () -> Void = {
            if fired.withLockedValue({ f in defer { f = true }; return !f }) { queued() }
        }
        defer { raise() }

        // A batch keeps its producer id and sequences, through request timeouts and reconnects,
        // until it is acknowledged or this deadline passes (the Java client's delivery.timeout.ms).
        // Giving up at one request's own timeout dropped the producer, and the next try, under a
        // new id, stored again what a slow broker had already stored.
        let deadline = ContinuousClock.now + family.config.deliveryTimeout
        // Per partition, the parts still to send, in WAL order (a split's halves one after the
        // other); one part per partition per round.
        var queues: [Int32: [Part]] = [:]
        for (partition, indices) in byPartition {
            queues[partition] = KafkaRecordBatch.chunks(indices, limit: meta.maxMessageBytes, size: { estimatedSize(batch[$0].record) })
                .map { Part(partition: partition, indices: $0) }
        }
        // A part handed sequences and left unacknowledged when this send ends (given up, paused)
        // leaves a gap no later batch can cross: the producer is dropped.
        defer {
            for part in queues.values.joined() {
                guard let base = part.base else { continue }
                let key = KafkaProducerState.PartitionKey(topic: topic, partition: part.partition)
                family.settle { s in
                    if s.isOpen(key, base: base, generation: part.generation) { s.invalidate(generation: part.generation) }
                }
            }
        }
        var lastError = ""
        var backoff = false
        var round = 0
        while queues.values.contains(where: { !$0.isEmpty }) {
            round += 1
            if round > 1, ContinuousClock.now >= deadline {
                for part in queues.values.joined() { for i in part.indices where outcomes[i] == nil { outcomes[i] = .retryable("kafka: \(lastError)") } }
                break
            }
            if backoff { try? await Task.sleep(for: .milliseconds(min(1000, 25 << min(round, 5)))) }
            backoff = false
            let (_, generation) = try await family.producer()
            // This round: the first part of each partition; one handed sequences under an older
            // producer is handed new ones.
            var heads: [Int32] = []
            for partition in queues.keys.sorted() where !(queues[partition]!.isEmpty) {
                if queues[partition]![0].generation != generation { queues[partition]![0].base = nil }
                heads.append(partition)
            }
            var refresh = false
            var connections: [Int32: KafkaConnection] = [:]  // by leader
            var sendable: [Int32] = []
            for partition in heads {
                let leader = Int(partition) < meta.leaders.count ? meta.leaders[Int(partition)] : -1
                guard leader >= 0, let node = family.node(leader) else {
                    lastError = "no leader for partition \(partition) of \(topic)"
                    refresh = true
                    backoff = true
                    continue
                }
                if connections[leader] == nil {
                    let connection = try await family.connection(host: node.host, port: node.port)
                    guard connection.version(KafkaProduce.apiKey, supported: KafkaProduce.versions) != nil else {
                        throw SinkConnectionError("kafka broker \(connection.broker) speaks no Produce version in \(KafkaProduce.versions)")
                    }
                    connections[leader] = connection
                }
                sendable.append(partition)
            }
            let leaderOf = { (partition: Int32) -> Int32 in meta.leaders[Int(partition)] }
            var answers: [(partitions: [Int32], answers: EventLoopFuture<[PartAnswer]>)] = []
            // Batches sent again go first, each in its turn (the first unacknowledged of its partition).
            for partition in sendable {
                let part = queues[partition]![0]
                guard let base = part.base else { continue }
                let key = KafkaProducerState.PartitionKey(topic: topic, partition: partition)
                let connection = connections[leaderOf(partition)]!
                // Connections are looked up before waiting: one closed meanwhile sends the round again.
                let sent = await family.resend(key, base: base, generation: generation, deadline: deadline, ready: { connection.isActive }) { producer in
                    produce(connection, batch, [(part, producer)], generation: generation)
                }
                if let sent {
                    answers.append(([partition], sent))
                } else if !family.producerState.isOpen(key, base: base, generation: generation) {
                    queues[partition]![0].base = nil  // its producer is gone: sent anew (if time is up instead, the loop says so)
                }
            }
            // New batches: sequences for all of them at once, one request per leader.
            let fresh = sendable.filter { queues[$0]![0].base == nil }
            if !fresh.isEmpty {
                let keys = fresh.map { (key: KafkaProducerState.PartitionKey(topic: topic, partition: $0), count: queues[$0]![0].indices.count) }
                let heads = fresh.map { queues[$0]![0] }
                let leaders = Set(fresh.map(leaderOf))
                let written = await family.admit(keys, generation: generation, deadline: deadline,
                                                 ready: { leaders.allSatisfy { connections[$0]!.isActive } }) { producers in
                    var byLeader: [Int32: [(Part, KafkaRecordBatch.Producer)]] = [:]
                    for (part, producer) in zip(heads, producers) {
                        byLeader[leaderOf(part.partition), default: []].append((part, producer))
                    }
                    let requests = byLeader.sorted(by: { $0.key < $1.key }).map { leader, parts in
                        (partitions: parts.map(\.0.partition), answers: produce(connections[leader]!, batch, parts, generation: generation))
                    }
                    return (requests, producers)
                }
                if let (requests, producers) = written {
                    for (partition, producer) in zip(fresh, producers) {
                        queues[partition]![0].base = producer.baseSequence
                        queues[partition]![0].generation = generation
                    }
                    answers += requests
                    // The pipeline's next send starts now: its batches get the sequences after these.
                    // (Not before: two sends waiting to be admitted could take them out of WAL order.)
                    raise()
                }
            }
            // What each part's answer says.
            for (partitions, future) in answers {
                let results: [PartAnswer]
                do {
                    results = try await future.get()
                } catch {
                    results = partitions.map { _ in .resend(reason: "\(error)", refresh: true, backoff: true) }
                }
                for (partition, answer) in zip(partitions, results) {
                    var part = queues[partition]![0]
                    switch answer {
                    case .delivered:
                        for i in part.indices { outcomes[i] = .delivered }
                        queues[partition]!.removeFirst()
                    case .resend(let reason, let refreshMetadata, let wait):
                        lastError = "partition \(partition): \(reason)"
                        refresh = refresh || refreshMetadata
                        backoff = backoff || wait
                    case .split(let second, let reason):
                        lastError = "partition \(partition): \(reason)"
                        let half = part.indices.count / 2
                        var rest = part
                        rest.indices = Array(part.indices[half...])
                        rest.base = second
                        part.indices = Array(part.indices[..<half])
                        queues[partition]!.replaceSubrange(0...0, with: [part, rest])
                    case .permanent(let indices, let reason):
                        let refused = Set(indices.map { part.indices[$0] })
                        for i in refused { outcomes[i] = .permanent("kafka topic \(topic) partition \(partition): \(reason)") }
                        part.indices = part.indices.filter { !refused.contains($0) }
                        part.base = nil
                        if part.indices.isEmpty { queues[partition]!.removeFirst() } else { queues[partition]![0] = part }
                    case .anew(let reason):
                        lastError = "partition \(partition): \(reason)"
                        queues[partition]![0].base = nil
                    case .pause(let reason):
                        throw SinkConnectionError("kafka refused producing to \(topic): \(reason)")
                    }
                }
            }
            if refresh { meta = (try? await family.metadata(topic, refresh: true)) ?? meta }
        }
        return outcomes.map { $0 ?? .retryable("kafka: not sent") }
    }

    /// Writes one Produce request with `parts` (each with its producer fields) on `connection`
    /// now, and returns what each part's answer means, the producer's state settled as the answer
    /// arrives (so that a batch waiting for its turn never waits for another send to look).
    func produce(_ connection: KafkaConnection, _ batch: [SequencedRecord], _ parts: [(Part, KafkaRecordBatch.Producer)], generation: Int) -> EventLoopFuture<[PartAnswer]> {
        let version = connection.version(KafkaProduce.apiKey, supported: KafkaProduce.versions) ?? KafkaProduce.versions.lowerBound
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        let compression: KafkaRecordBatch.Compression = family.config.compression == .gzip ? .gzip : .none
        let clientID = family.config.clientID
        let timeoutMillis = Int32(clamping: family.config.requestTimeout.milliseconds)
        let topic = self.topic
        let family = self.family
        let sent = parts.map { (partition: $0.0.partition, base: $0.1.baseSequence, count: $0.0.indices.count) }
        // Built here, off the event loop, in one buffer: each payload is copied once on its way
        // to the socket's buffer (the connection puts the correlation id in when it writes it).
        var largest = 0
        let capacity = parts.reduce(KafkaRecordBatch.overheadBytes * parts.count) { total, part in
            part.0.indices.reduce(total) { $0 + estimatedSize(batch[$1].record) }
        }
        let request = KafkaProduce.request(
            version: version, correlationID: 0, clientID: clientID, timeoutMillis: timeoutMillis, topic: topic, capacity: capacity,
            batches: parts.map { part, producer in
                (part.partition, { (w: inout KafkaWriter) in
                    let start = w.bytes.count
                    KafkaRecordBatch.encode(part.indices.map { record(batch[$0].record, timestampMillis: now) }, producer: producer, compression: compression, into: &w)
                    largest = max(largest, w.bytes.count - start)
                })
            })
        family.batchesSent.withLockedValue { [largest] in $0 = ($0.count + parts.count, max($0.largest, largest)) }
        let answer = connection.enqueue(timeout: family.timeout, framed: request)
        return answer.map { payload in
            Self.settle(payload: payload, version: version, connection: connection, sent: sent, topic: topic, generation: generation, family: family)
        }.recover { error in
            // No answer: perhaps stored. Sent again with the same sequences (stored once).
            Self.failed(sent, reason: "broker \(connection.broker): \(error)", refresh: true, topic: topic, generation: generation, family: family)
        }
    }

    /// Every batch of a request failed as a whole (no answer, or one sinkd cannot read): each waits
    /// to be sent again with its sequences.
    static func failed(_ sent: [(partition: Int32, base: Int32, count: Int)], reason: String, refresh: Bool,
                       topic: String, generation: Int, family: KafkaSinkFamily) -> [PartAnswer] {
        family.settle { s in for p in sent { s.failed(.init(topic: topic, partition: p.partition), base: p.base, generation: generation) } }
        return sent.map { _ in .resend(reason: reason, refresh: refresh, backoff: true) }
    }

    static func settle(payload: [UInt8], version: Int16, connection: KafkaConnection, sent: [(partition: Int32, base: Int32, count: Int)],
                       topic: String, generation: Int, family: KafkaSinkFamily) -> [PartAnswer] {
        let response: KafkaProduce.Response
        do {
            response = try KafkaProduce.response(payload, version: version)
        } catch {
            connection.channel.close(promise: nil)
            return failed(sent, reason: "broker \(connection.broker) sent a Produce answer sinkd cannot read (\(error))", refresh: false,
                          topic: topic, generation: generation, family: family)
        }
        let results = Dictionary((response.results[topic] ?? []).map { ($0.partition, $0) }, uniquingKeysWith: { a, _ in a })
        return family.settle { s in
            sent.map { p -> PartAnswer in
                let key = KafkaProducerState.PartitionKey(topic: topic, partition: p.partition)
                guard let result = results[p.partition] else {
                    s.failed(key, base: p.base, generation: generation)
                    return .resend(reason: "broker \(connection.broker) did not answer for partition \(p.partition)", refresh: false, backoff: true)
                }
                switch KafkaProduceDecision.decide(errorCode: result.errorCode, count: p.count, recordErrors: result.recordErrors, message: result.errorMessage) {
                case .delivered:
                    s.acknowledged(key, base: p.base, generation: generation)
                    return .delivered
                case .retry(let refresh, let reason):
                    s.failed(key, base: p.base, generation: generation)
                    return .resend(reason: reason, refresh: refresh, backoff: true)
                case .resetProducer(let reason):
                    // Out of order behind a batch that failed: that one first, then this one.
                    if result.errorCode == 45, s.wasFollowing(key, base: p.base, generation: generation) {
                        s.failed(key, base: p.base, generation: generation)
                        return .resend(reason: reason, refresh: false, backoff: false)
                    }
                    s.invalidate(generation: generation)
                    return .anew(reason: reason)
                case .split(let reason):
                    guard let second = s.split(key, base: p.base, firstCount: p.count / 2, generation: generation) else { return .anew(reason: reason) }
                    return .split(second: second, reason: reason)
                case .permanent(let indices, let reason):
                    s.invalidate(generation: generation)
                    return .permanent(indices: indices, reason: reason)
                case .pause(let reason):
                    s.invalidate(generation: generation)
                    return .pause(reason: reason)
                }
            }
        }
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
