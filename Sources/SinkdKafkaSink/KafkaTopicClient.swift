import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import SinkdCore
import SinkdDelivery
import SinkdTLS
import NIOSSL

/// One `kafka:TOPIC` sink's client: its batches split by partition and produced through the
/// family's shared connections and producer (KafkaSinkFamily), retried within one send.
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

    func send(
        _ batch: [SequencedRecord], queued: @escaping @Sendable () -> Void
    ) async throws(SinkConnectionError) -> [DeliveryOutcome] {
        var meta = try await family.metadata(topic, refresh: false)
        // Placement as the Java client's default partitioner places keyed records.
        var byPartition: [Int32: [Int]] = [:]
        for (i, item) in batch.enumerated() {
            let p =
                KafkaPartitioner.partition(forKey: Array(item.record.id.utf8), partitions: Int32(meta.leaders.count))
                ?? 0
            byPartition[p, default: []].append(i)
        }
        let fired = NIOLockedValueBox(false)
        let raise: @Sendable () -> Void = {
            if fired.withLockedValue({ f in
                defer { f = true }; return !f
            }) {
                queued()
            }
        }
        defer { raise() }

        // A batch keeps its producer id and sequences, through request timeouts and reconnects,
        // until it is acknowledged or this deadline passes (the Java client's delivery.timeout.ms).
        // Giving up at one request's own timeout dropped the producer, and the next try, under a
        // new id, stored again what a slow broker had already stored.
        let deadline = ContinuousClock.now + family.config.deliveryTimeout
        // The rounds' decisions (KafkaSendRounds); this loop does their I/O.
        var rounds = KafkaSendRounds(
            topic: topic, records: batch.count,
            parts: byPartition.mapValues { indices in
                KafkaRecordBatch.chunks(indices, limit: meta.maxMessageBytes, size: { estimatedSize(batch[$0].record) })
            })
        // A part handed sequences and left unacknowledged when this send ends (given up, paused)
        // leaves a gap no later batch can cross: the producer is dropped.
        defer {
            for part in rounds.unacknowledged {
                guard let base = part.base else { continue }
                let key = KafkaProducerState.PartitionKey(topic: topic, partition: part.partition)
                family.settle { s in
                    if s.isOpen(key, base: base, generation: part.generation) {
                        s.invalidate(generation: part.generation)
                    }
                }
            }
        }
        while rounds.hasWork {
            switch rounds.startRound(deadlinePassed: ContinuousClock.now >= deadline) {
            case .gaveUp:
                return rounds.finalOutcomes
            case .send(let backoffMillis):
                if backoffMillis > 0 { try? await Task.sleep(for: .milliseconds(backoffMillis)) }
            }
            let (_, generation) = try await family.producer()
            // This round: the first part of each partition.
            let heads = rounds.heads(generation: generation)
            var connections: [Int32: KafkaConnection] = [:]  // by leader
            var sendable: [Int32] = []
            for partition in heads {
                let leader = Int(partition) < meta.leaders.count ? meta.leaders[Int(partition)] : -1
                guard leader >= 0, let node = family.node(leader) else {
                    rounds.noLeader(partition)
                    continue
                }
                if connections[leader] == nil {
                    let connection = try await family.connection(host: node.host, port: node.port)
                    guard connection.version(KafkaProduce.apiKey, supported: KafkaProduce.versions) != nil else {
                        throw SinkConnectionError(
                            "kafka broker \(connection.broker) speaks no Produce version in \(KafkaProduce.versions)")
                    }
                    connections[leader] = connection
                }
                sendable.append(partition)
            }
            let leaderOf = { (partition: Int32) -> Int32 in meta.leaders[Int(partition)] }
            var answers: [(partitions: [Int32], answers: EventLoopFuture<[PartAnswer]>)] = []
            // Batches sent again go first, each in its turn (the first unacknowledged of its partition).
            for partition in sendable {
                let part = rounds.head(partition)
                guard let base = part.base else { continue }
                let key = KafkaProducerState.PartitionKey(topic: topic, partition: partition)
                let connection = connections[leaderOf(partition)]!
                // Connections are looked up before waiting: one closed meanwhile sends the round again.
                let sent = await family.resend(
                    key, base: base, generation: generation, deadline: deadline, ready: { connection.isActive }
                ) { producer in
                    produce(connection, batch, [(part, producer)], generation: generation)
                }
                if let sent {
                    answers.append(([partition], sent))
                } else if !family.producerState.isOpen(key, base: base, generation: generation) {
                    rounds.producerGone(partition)  // sent anew (if time is up instead, the next round says so)
                }
            }
            // New batches: sequences for all of them at once, one request per leader.
            let fresh = sendable.filter { rounds.head($0).base == nil }
            if !fresh.isEmpty {
                let keys = fresh.map {
                    (
                        key: KafkaProducerState.PartitionKey(topic: topic, partition: $0),
                        count: rounds.head($0).indices.count
                    )
                }
                let heads = fresh.map { rounds.head($0) }
                let leaders = Set(fresh.map(leaderOf))
                let written = await family.admit(
                    keys, generation: generation, deadline: deadline,
                    ready: { leaders.allSatisfy { connections[$0]!.isActive } }
                ) { producers in
                    var byLeader: [Int32: [(Part, KafkaRecordBatch.Producer)]] = [:]
                    for (part, producer) in zip(heads, producers) {
                        byLeader[leaderOf(part.partition), default: []].append((part, producer))
                    }
                    let requests = byLeader.sorted(by: { $0.key < $1.key }).map { leader, parts in
                        (
                            partitions: parts.map(\.0.partition),
                            answers: produce(connections[leader]!, batch, parts, generation: generation)
                        )
                    }
                    return (requests, producers)
                }
                if let (requests, producers) = written {
                    for (partition, producer) in zip(fresh, producers) {
                        rounds.assigned(partition, base: producer.baseSequence, generation: generation)
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
                    try rounds.requestFailed(partitions, error: "\(error)")
                    continue
                }
                for (partition, answer) in zip(partitions, results) { try rounds.apply(answer, to: partition) }
            }
            if rounds.refresh { meta = (try? await family.metadata(topic, refresh: true)) ?? meta }
        }
        return rounds.finalOutcomes
    }

    /// Writes one Produce request with `parts` (each with its producer fields) on `connection`
    /// now, and returns what each part's answer means, the producer's state settled as the answer
    /// arrives (so that a batch waiting for its turn never waits for another send to look).
    func produce(
        _ connection: KafkaConnection, _ batch: [SequencedRecord], _ parts: [(Part, KafkaRecordBatch.Producer)],
        generation: Int
    ) -> EventLoopFuture<[PartAnswer]> {
        let version =
            connection.version(KafkaProduce.apiKey, supported: KafkaProduce.versions)
            ?? KafkaProduce.versions.lowerBound
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
            version: version, correlationID: 0, clientID: clientID, timeoutMillis: timeoutMillis, topic: topic,
            capacity: capacity,
            batches: parts.map { part, producer in
                (
                    part.partition,
                    { (w: inout KafkaWriter) in
                        let start = w.bytes.count
                        KafkaRecordBatch.encode(
                            part.indices.map { record(batch[$0].record, timestampMillis: now) }, producer: producer,
                            compression: compression, into: &w)
                        largest = max(largest, w.bytes.count - start)
                    }
                )
            })
        family.batchesSent.withLockedValue { [largest] in $0 = ($0.count + parts.count, max($0.largest, largest)) }
        let answer = connection.enqueue(timeout: family.timeout, framed: request)
        return answer.map { payload in
            Self.settle(
                payload: payload, version: version, connection: connection, sent: sent, topic: topic,
                generation: generation, family: family)
        }.recover { error in
            // No answer: perhaps stored. Sent again with the same sequences (stored once).
            Self.failed(
                sent, reason: "broker \(connection.broker): \(error)", refresh: true, topic: topic,
                generation: generation, family: family)
        }
    }

    /// Every batch of a request failed as a whole (no answer, or one sinkd cannot read): each waits
    /// to be sent again with its sequences.
    static func failed(
        _ sent: [(partition: Int32, base: Int32, count: Int)], reason: String, refresh: Bool,
        topic: String, generation: Int, family: KafkaSinkFamily
    ) -> [PartAnswer] {
        family.settle { s in
            for p in sent {
                s.failed(.init(topic: topic, partition: p.partition), base: p.base, generation: generation)
            }
        }
        return sent.map { _ in .resend(reason: reason, refresh: refresh, backoff: true) }
    }

    static func settle(
        payload: [UInt8], version: Int16, connection: KafkaConnection,
        sent: [(partition: Int32, base: Int32, count: Int)],
        topic: String, generation: Int, family: KafkaSinkFamily
    ) -> [PartAnswer] {
        let response: KafkaProduce.Response
        do {
            response = try KafkaProduce.response(payload, version: version)
        } catch {
            connection.channel.close(promise: nil)
            return failed(
                sent, reason: "broker \(connection.broker) sent a Produce answer sinkd cannot read (\(error))",
                refresh: false,
                topic: topic, generation: generation, family: family)
        }
        let results = Dictionary(
            (response.results[topic] ?? []).map { ($0.partition, $0) }, uniquingKeysWith: { a, _ in a })
        return family.settle { s in
            sent.map { p -> PartAnswer in
                let key = KafkaProducerState.PartitionKey(topic: topic, partition: p.partition)
                guard let result = results[p.partition] else {
                    s.failed(key, base: p.base, generation: generation)
                    return .resend(
                        reason: "broker \(connection.broker) did not answer for partition \(p.partition)",
                        refresh: false, backoff: true)
                }
                switch KafkaProduceDecision.decide(
                    errorCode: result.errorCode, count: p.count, recordErrors: result.recordErrors,
                    message: result.errorMessage)
                {
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
                    guard let second = s.split(key, base: p.base, firstCount: p.count / 2, generation: generation)
                    else { return .anew(reason: reason) }
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
            for (name, value) in [
                ("workflowInstanceId", r.workflowInstanceId), ("workflowType", r.workflowType),
                ("correlationId", r.correlationId), ("taskRefName", r.taskRefName),
            ] {
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
