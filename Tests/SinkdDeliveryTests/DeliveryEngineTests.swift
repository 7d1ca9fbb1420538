import Foundation
import Testing
import SinkdCore
import SinkdTestSupport
@testable import SinkdDelivery
@testable import SinkdWAL

@Suite(.serialized) struct DeliveryEngineTests {
    static func ids(_ prefix: String, _ n: Int) -> [String] { (0..<n).map { "\(prefix)\($0)" } }

    @Test func everyRecordIsDeliveredAndLeavesTheWAL() async throws {
        let h = try EngineHarness()
        h.append("http:a", Self.ids("a", 500))
        #expect(await h.eventually { h.family.deliveredRecords("http:a").count == 500 })
        #expect(Set(h.family.deliveredRecords("http:a").map(\.record.id)) == Set(Self.ids("a", 500)))
        #expect(await h.eventually { h.wal.progress(of: "http:a").watermark >= 500 })
        await h.finish()
    }

    @Test func recordsThatFailAreRetriedUntilDelivered() async throws {
        let h = try EngineHarness()
        h.family.script(
            "http:r",
            [
                .outcomes { $0.seq % 2 == 0 ? .retryable("503 Service Unavailable") : .delivered },
                .outcomes { _ in .retryable("503 Service Unavailable") },
                .outcomes { _ in .retryable("503 Service Unavailable") },
            ])
        h.append("http:r", Self.ids("r", 20))
        #expect(await h.eventually { h.family.deliveredRecords("http:r").count == 20 })
        let snapshot = h.service.snapshots.first { $0.sink == "http:r" }
        #expect((snapshot?.retried ?? 0) >= 10)
        #expect(try h.deadLetters.entries().isEmpty)
        await h.finish()
    }

    @Test func permanentErrorsAndExhaustedRetriesGoToTheDeadLetterStore() async throws {
        let h = try EngineHarness { $0.sinks.http?.options.retry.maxAttempts = 3 }
        h.family.script(
            "http:p",
            [
                .outcomes {
                    $0.record.id == "bad"
                        ? .permanent("404 Not Found: no such queue")
                        : $0.record.id == "flaky" ? .retryable("timeout") : .delivered
                },
                .outcomes { _ in .retryable("timeout") },
                .outcomes { _ in .retryable("timeout") },
            ])
        h.append("http:p", ["ok", "bad", "flaky"])
        #expect(await h.eventually { (try? h.deadLetters.entries(sink: "http:p").count) == 2 })
        let entries = try h.deadLetters.entries(sink: "http:p").sorted { $0.seq < $1.seq }
        #expect(entries.map(\.record.id) == ["bad", "flaky"])
        #expect(entries[0].error == "404 Not Found: no such queue")
        #expect(entries[0].attempts == 1)
        #expect(entries[1].error == "gave up after 3 attempts: timeout")
        #expect(entries[1].attempts == 3)
        #expect(entries[1].firstAttemptMillis != nil && entries[1].lastAttemptMillis! >= entries[1].firstAttemptMillis!)
        #expect(entries[1].record.payload == Array("\"pppppppppppppppp\"".utf8))
        #expect(h.family.deliveredRecords("http:p").map(\.record.id) == ["ok"])
        #expect(
            await h.eventually { h.wal.progress(of: "http:p").watermark >= 3 }, "dead letters are finished in the WAL")
        await h.finish()
    }

    @Test func aConnectionFailurePausesTheSinkAndSpendsNoAttempt() async throws {
        let h = try EngineHarness { $0.sinks.http?.options.retry.maxAttempts = 1 }
        h.family.script("http:c", [.connectionError("connection refused"), .connectionError("connection refused")])
        h.append("http:c", Self.ids("c", 30))
        #expect(await h.eventually { h.family.deliveredRecords("http:c").count == 30 })
        #expect(try h.deadLetters.entries().isEmpty, "max_attempts 1 was not spent on connection failures")
        await h.finish()
    }

    @Test func aDeadSinkNeverDelaysAnother() async throws {
        let h = try EngineHarness()
        h.family.script("http:dead", Array(repeating: .hang, count: 10))
        h.append("http:dead", Self.ids("d", 50))
        h.append("http:alive", Self.ids("l", 200))
        #expect(await h.eventually { h.family.deliveredRecords("http:alive").count == 200 })
        #expect(h.family.deliveredRecords("http:dead").isEmpty)
        await h.finish()
    }

    /// Found by the RabbitMQ alarm test: with one batch in flight that never completes (a broker
    /// blocking publishes), records appended later must still be read and sent in other batches.
    @Test func aBatchThatNeverCompletesDoesNotStopLaterRecords() async throws {
        let h = try EngineHarness()
        h.family.script("http:slow", [.hang])
        h.append("http:slow", Self.ids("first", 5))
        #expect(await h.eventually { h.family.batches("http:slow") == 1 }, "the first batch is in flight")
        h.append("http:slow", Self.ids("later", 30))
        #expect(
            await h.eventually { h.family.deliveredRecords("http:slow").count == 30 },
            "later records went out beside the stuck batch")
        await h.finish()
    }

    @Test func strictOrderingDeliversInWALOrderDespiteFailures() async throws {
        let h = try EngineHarness { $0.sinks.http?.options.ordering = .strict }
        h.family.batchLimit = 3
        h.family.script(
            "http:s",
            [
                .outcomes { $0.seq == 2 ? .retryable("busy") : .delivered },
                .outcomes { _ in .retryable("busy") },
            ])
        h.append("http:s", Self.ids("s", 12))
        #expect(await h.eventually { h.family.deliveredRecords("http:s").count == 12 })
        // Seq 1 was delivered in the first batch; then 2 stays at the head until it succeeds.
        let order = h.family.deliveredRecords("http:s").map(\.seq)
        let afterFirst = Array(order.drop { $0 != 2 })
        #expect(afterFirst == afterFirst.sorted(), "nothing overtook the failing record: \(order)")
        #expect(Set(order) == Set(1...12))
        await h.finish()
    }

    @Test func gracefulShutdownWithRecordsInFlightThenRestartDeliversEverything() async throws {
        let h = try EngineHarness()
        h.family.delay = .milliseconds(50)
        h.append("http:g", Self.ids("g", 400))
        #expect(await h.eventually { h.family.deliveredRecords("http:g").count > 0 })
        try await h.restart()
        h.family.delay = .zero
        #expect(await h.eventually { Set(h.family.deliveredRecords("http:g").map(\.record.id)).count == 400 })
        let all = h.family.deliveredRecords("http:g")
        print("graceful restart: 400 records, \(all.count - 400) sent twice")
        await h.finish()
    }

    /// A reload that changes a family's options, one that removes the family and one that adds it
    /// back, while records stream: every record delivered, none twice.
    @Test func reloadsChangeRemoveAndRestoreAFamilyWithoutLossOrDuplicates() async throws {
        let h = try EngineHarness()
        h.family.delay = .milliseconds(2)
        let writer = Task.detached {
            for chunk in 0..<40 {
                h.append("http:r", (0..<50).map { "r-\(chunk)-\($0)" })
                try? await Task.sleep(for: .milliseconds(5))
            }
        }
        #expect(await h.eventually { h.family.deliveredRecords("http:r").count > 100 })
        var changed = h.config
        changed.sinks.http?.options.batchSize = 7
        #expect(h.service.apply(config: changed, families: [.http: h.family]) == 2)
        #expect(await h.eventually { h.family.deliveredRecords("http:r").count > 600 })
        var removed = h.config
        removed.sinks.http = nil
        #expect(h.service.apply(config: removed, families: [:]) == 3)
        #expect(await h.eventually { h.service.snapshots.isEmpty }, "the removed family's pipeline stopped")
        let whileRemoved = h.family.deliveredRecords("http:r").count
        _ = await writer.value
        #expect(h.family.deliveredRecords("http:r").count == whileRemoved, "nothing is sent while the family is gone")
        #expect(h.wal.backlog()["http:r"] != nil, "the records wait in the WAL")
        #expect(h.service.apply(config: h.config, families: [.http: h.family]) == 4)
        #expect(await h.eventually { Set(h.family.deliveredRecords("http:r").map(\.record.id)).count == 2000 })
        let all = h.family.deliveredRecords("http:r")
        #expect(all.count == 2000, "\(all.count - 2000) records were sent twice")
        #expect(h.family.shutdowns == 1, "the removed family was shut down once its pipeline had left, and only then")
        await h.finish()
    }

    /// A sink that refuses every record: dead letters are logged one by one only up to a few per
    /// window, then summed up; never a line per record.
    @Test func deadLettersAreNotLoggedOnePerRecord() async throws {
        let logs = CapturedLogs()
        let h = try EngineHarness(logger: logs.logger())
        h.family.script("http:refused", Array(repeating: .outcomes({ _ in .permanent("no such queue") }), count: 100))
        h.append("http:refused", Self.ids("x", 400))
        #expect(
            await h.eventually {
                (try? h.deadLetters.entries(sink: "http:refused", since: nil, until: nil).count) == 400
            })
        let lines = logs.entries.filter { $0.message.hasPrefix("dead-lettered") }
        #expect(lines.filter { $0.message == "dead-lettered a record" }.count == 5)
        #expect(lines.count <= 6, "\(lines.count) dead-letter lines for 400 records")
        await h.finish()
    }

    /// The service group cancelled (not a graceful shutdown): delivery ends promptly and does not
    /// restart pipelines that only left because of the cancellation.
    @Test func cancellationEndsDeliveryWithoutRestartingPipelines() async throws {
        let h = try EngineHarness()
        h.family.delay = .milliseconds(20)
        h.append("http:c", Self.ids("c", 500))
        #expect(await h.eventually { h.family.deliveredRecords("http:c").count > 0 })
        h.runTask?.cancel()
        let ended = LockedBox(false)
        Task { [task = h.runTask] in
            _ = try? await task?.value
            ended.set(true)
        }
        #expect(await h.eventually(timeout: .seconds(10)) { ended.get() }, "the service returned after cancellation")
        #expect(h.service.snapshots.isEmpty)
        await h.finish()
    }

    @Test func idlePipelinesAreReapedAndComeBackOnDemand() async throws {
        let h = try EngineHarness { $0.sinks.http?.options.idleTimeout = .milliseconds(100) }
        h.append("http:i", ["one"])
        #expect(await h.eventually { h.family.deliveredRecords("http:i").count == 1 })
        #expect(await h.eventually { h.service.snapshots.isEmpty }, "reaped after idle_timeout")
        h.append("http:i", ["two"])
        #expect(await h.eventually { h.family.deliveredRecords("http:i").count == 2 })
        await h.finish()
    }

    @Test func atMostMaxSinksPipelinesAndTheRestWait() async throws {
        let h = try EngineHarness {
            $0.delivery.maxSinks = 2
            $0.sinks.http?.options.idleTimeout = .milliseconds(50)
        }
        for n in 0..<6 { h.append("http:m\(n)", Self.ids("m\(n)-", 20)) }
        var peak = 0
        let allDone = await h.eventually {
            peak = max(peak, h.service.snapshots.count)
            return (0..<6).allSatisfy { h.family.deliveredRecords("http:m\($0)").count == 20 }
        }
        #expect(allDone)
        #expect(peak <= 2)
        await h.finish()
    }

    @Test func aMillionRecordBacklogWithTheSinkDownStaysBoundedAndDrainsWhenItReturns() async throws {
        let h = try EngineHarness {
            $0.wal.segmentSize = 8 << 20
            $0.wal.maxSize = 4 << 30
            $0.sinks.http?.options.batchSize = 500
        }
        h.family.batchLimit = 500
        h.family.script("http:b", Array(repeating: .connectionError("broker down"), count: 3))
        let total = 1_000_000
        let rssBefore = Self.residentMiB()
        for chunk in 0..<(total / 10_000) {
            h.append("http:b", (0..<10_000).map { "b\(chunk)-\($0)" }, payloadBytes: 8)
        }
        let held = h.service.snapshots.first?.held ?? 0
        let rssBacklog = Self.residentMiB()
        print(
            "backlog of \(total) records with the sink down: \(held) held in memory, test process RSS \(rssBefore) MiB before, \(rssBacklog) MiB with the backlog"
        )
        // The buffer limit (4 × batch × in flight) plus at most one read of 2 × batch past it.
        #expect(held <= 4 * 500 * 4 + 2 * 500)
        #expect(await h.eventually(timeout: .seconds(120)) { h.family.deliveredRecords("http:b").count >= total })
        #expect(Set(h.family.deliveredRecords("http:b").map(\.record.id)).count == total)
        print("drained; test process RSS \(Self.residentMiB()) MiB")
        await h.finish()
    }

    static func residentMiB() -> Int {
        let status = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
        let line = status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") } ?? ""
        return (Int(line.split(separator: " ").dropFirst().first ?? "") ?? 0) / 1024
    }
}

@Suite struct DeadLetterStoreTests {
    /// Found by the conductor tests: a sink named after a long workflow type made a file name above
    /// NAME_MAX, and the dead letter could never be written.
    @Test func sinksWithLongNamesGetShortDistinctFiles() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent(
            "sinkd-dlq-\(UUID().uuidString.prefix(8))"
        ).path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = try DeadLetterStore(directory: dir)
        let a = "conductor:" + String(repeating: "w", count: 300) + ":a"
        let b = "conductor:" + String(repeating: "w", count: 300) + ":b"
        #expect(DeadLetterStore.fileName(for: a).utf8.count <= 255)
        #expect(DeadLetterStore.fileName(for: a) != DeadLetterStore.fileName(for: b))
        #expect(DeadLetterStore.fileName(for: a) == DeadLetterStore.fileName(for: a), "stable")
        let entry = DeadLetterStore.Entry(
            seq: 1, record: EventRecord(id: "x", sink: a, payload: Array("{}".utf8)), error: "e", attempts: 1,
            firstAttemptMillis: nil, lastAttemptMillis: nil, deadLetteredMillis: 1)
        try store.append(sink: a, [entry])
        #expect(try store.entries(sink: a) == [entry])
        #expect(try store.entries(sink: b).isEmpty)
    }

    @Test func appendListPurge() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent(
            "sinkd-dlq-\(UUID().uuidString.prefix(8))"
        ).path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = try DeadLetterStore(directory: dir)
        var record = EventRecord(
            id: "t\"1", sink: "amqp_exchange:billing?routingKey=paid",
            payload: Array(#"{"a": [1, "x,\"payload\":"]}"#.utf8))
        record.workflowType = "wf"
        record.priority = 7
        let e1 = DeadLetterStore.Entry(
            seq: 5, record: record, error: "unroutable: NO_ROUTE", attempts: 1, firstAttemptMillis: 100,
            lastAttemptMillis: 100, deadLetteredMillis: 1000)
        let e2 = DeadLetterStore.Entry(
            seq: 6, record: EventRecord(id: "t2", sink: "sqs:orders", payload: Array("null".utf8)), error: "x",
            attempts: 3, firstAttemptMillis: nil, lastAttemptMillis: nil, deadLetteredMillis: 2000)
        try store.append(sink: record.sink, [e1])
        try store.append(sink: "sqs:orders", [e2])
        #expect(DeadLetterStore.fileName(for: record.sink) == "amqp_exchange%3Abilling%3FroutingKey%3Dpaid.ndjson")
        #expect(try store.entries(sink: record.sink) == [e1], "the payload and every field survive the round trip")
        #expect(try store.entries().count == 2)
        #expect(try store.entries(since: 1500).map(\.seq) == [6])
        #expect(try store.entries(until: 1500).map(\.seq) == [5])
        #expect(try store.purge(sink: "sqs:orders") == 1)
        #expect(try store.entries().map(\.seq) == [5])
    }
}
