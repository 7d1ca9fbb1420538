import Foundation
import Testing
import SinkdCore
@testable import SinkdIngest
@testable import SinkdWAL

#if canImport(Glibc)
import Glibc
import SinkdTestSupport
#endif

@Suite(.serialized, .blockingThreads) struct IngestServerTests {
    @Test func everyBadInputIsAnsweredAndTheConnectionStaysUsable() async throws {
        let h = try await IngestHarness()
        let c = try h.client()
        let bad: [(String, String)] = [
            ("not json", "malformed"),
            ("[1]", "malformed"),
            (#"{"sink":"file:x","payload":1}"#, "missing_field"),
            (#"{"id":"","sink":"file:x","payload":1}"#, "invalid_field"),
            (#"{"id":1,"sink":"file:x","payload":1}"#, "invalid_field"),
            (#"{"id":"a","sink":"file:x"}"#, "missing_field"),
            (#"{"id":"a","sink":"nocolon","payload":1}"#, "invalid_sink"),
            (#"{"id":"a","sink":"sqs:orders","payload":1}"#, "unknown_sink"),
            (#"{"id":"a","sink":"file:x","payload":1,"priority":100}"#, "invalid_field"),
            (#"{"id":"a","sink":"file:x","payload":1,"priority":"high"}"#, "invalid_field"),
        ]
        for (request, code) in bad {
            c.send([request, line("ok-\(code)-\(request.count)")])
            let r = c.responseObjects(2)
            #expect(r.count == 2)
            #expect(r.first?["status"] as? String == "rejected", "\(request)")
            #expect(r.first?["code"] as? String == code, "\(request)")
            #expect(r.first?["retryable"] as? Bool == false)
            #expect((r.first?["error"] as? String)?.isEmpty == false)
            #expect(r.last?["status"] as? String == "accepted", "the next request on the same connection is fine")
        }
        // Invalid UTF-8 inside the payload.
        c.write(Array(#"{"id":"u","sink":"file:x","payload":""#.utf8) + [0xFF, 0xFE] + Array("\"}\n".utf8))
        #expect(c.responseObjects(1).first?["code"] as? String == "malformed")
        await h.stop()
    }

    /// The Conductor plugin asks which queue types this sinkd serves: answered in its place among
    /// pipelined records, from the running configuration (a reload changes it), nothing written.
    @Test func aQueueTypesQueryIsAnsweredInOrderFromTheRunningConfiguration() async throws {
        let h = try await IngestHarness { $0.sinks.conductor = ConductorSinkConfig() }
        let c = try h.client()
        c.send([line("before"), #"{"query":"queueTypes"}"#, #"{"query":"nope"}"#, line("after")])
        let r = c.responseObjects(4)
        #expect(r.map { $0["status"] as? String } == ["accepted", "answer", "rejected", "accepted"])
        #expect(r[1]["queueTypes"] as? [String] == ["conductor"])
        #expect(r[1]["query"] as? String == "queueTypes")
        #expect(r[2]["code"] as? String == "invalid_field")
        var sinks = h.config.sinks
        sinks.sqs = SQSSinkConfig()
        sinks.kafka = KafkaSinkConfig()
        h.service.shared.updateSinks(sinks)
        c.send([#"{"query":"queueTypes"}"#])
        #expect(c.responseObjects(1).first?["queueTypes"] as? [String] == ["conductor", "kafka", "sqs"])
        #expect(h.wal.currentStats.appendedRecords == 2, "a query is never written to the WAL")
        await h.stop()
    }

    @Test func responsesComeInRequestOrderUnderPipelining() async throws {
        let h = try await IngestHarness()
        let c = try h.client()
        var lines: [String] = []
        for i in 0..<2000 {
            lines.append(i % 7 == 3 ? #"{"id":"bad-\#(i)","sink":"x","payload":1}"# : line("p-\(i)"))
        }
        c.send(lines)
        let responses = c.responseObjects(2000)
        #expect(responses.count == 2000)
        for (i, r) in responses.enumerated() {
            let expectedID = i % 7 == 3 ? "bad-\(i)" : "p-\(i)"
            #expect(r["id"] as? String == expectedID)
        }
        await h.stop()
    }

    @Test func tooLargeLineIsAnsweredWithoutBufferingAndFramingResumes() async throws {
        let h = try await IngestHarness { $0.ingest.maxRecordBytes = 1024 }
        let c = try h.client()
        let big = line("big", payload: "\"" + String(repeating: "x", count: 100_000) + "\"")
        c.send([line("before"), big, line("after")])
        let r = c.responseObjects(3)
        #expect(r.map { $0["status"] as? String } == ["accepted", "rejected", "accepted"])
        #expect(r[1]["code"] as? String == "too_large")
        #expect((r[1]["error"] as? String)?.contains("ingest.max_record_bytes allows 1KiB") == true)
        #expect(r[2]["id"] as? String == "after")
        await h.stop()
    }

    @Test func duplicatesAreAnsweredWithTheOriginalSeq() async throws {
        let h = try await IngestHarness()
        let c = try h.client()
        c.send([line("t-1"), line("t-1"), line("t-1", sink: "file:other")])
        let r = c.responseObjects(3)
        #expect(r[0]["status"] as? String == "accepted")
        #expect(r[1]["status"] as? String == "duplicate")
        #expect(r[1]["seq"] as? Int == r[0]["seq"] as? Int)
        #expect(r[2]["status"] as? String == "accepted", "dedupe is per (sink, id)")
        await h.stop()
    }

    /// Issue 20, item 2: the expanded form (`queueType` + `queueURI`, as Conductor's event queue
    /// provider sees a sink, already expanded) names the same sink as the raw form: same identity,
    /// same dedupe key (the second is a duplicate of the first), and it is not expanded again.
    @Test func theExpandedFormIsTheSameSinkAsTheRawForm() async throws {
        let h = try await IngestHarness { $0.sinks.conductor = ConductorSinkConfig() }
        let c = try h.client()
        c.send([
            #"{"id":"t-1","sink":"conductor","workflowType":"order_flow","taskRefName":"notify_ref","payload":{}}"#,
            #"{"id":"t-1","queueType":"conductor","queueURI":"order_flow:notify_ref","payload":{}}"#,
            #"{"id":"t-2","queueType":"conductor","queueURI":"otherWf:q","payload":{}}"#,
            #"{"id":"t-3","queueType":"file","queueURI":"events","payload":{}}"#,
            #"{"id":"t-4","sink":"file:events","queueType":"file","queueURI":"events","payload":{}}"#,
            #"{"id":"t-5","queueType":"conductor","payload":{}}"#,
        ])
        let r = c.responseObjects(6)
        #expect(r[0]["status"] as? String == "accepted")
        #expect(r[1]["status"] as? String == "duplicate", "same sink identity and id: \(r[1])")
        #expect(r[1]["seq"] as? Int == r[0]["seq"] as? Int)
        #expect(r[2]["status"] as? String == "accepted", "no workflowType or taskRefName needed: \(r[2])")
        #expect(r[3]["status"] as? String == "accepted")
        #expect(r[4]["code"] as? String == "invalid_field")
        #expect((r[5]["error"] as? String)?.contains("missing field 'queueURI'") == true, "\(r[5])")
        // What the WAL holds: the identities, the expanded one not expanded again.
        let sinks = Set(h.wal.backlog().keys)
        #expect(sinks == ["conductor:order_flow:notify_ref", "conductor:otherWf:q", "file:events"], "\(sinks)")
        await h.stop()
    }

    @Test func hundredThousandPipelinedRecordsOnOneConnection() async throws {
        let h = try await IngestHarness()
        let c = try h.client()
        let total = 100_000
        let writer = Task.detached {
            var chunk = ""
            for i in 0..<total {
                chunk += line("r-\(i)") + "\n"
                if i % 1000 == 999 {
                    c.write(Array(chunk.utf8))
                    chunk = ""
                }
            }
        }
        var accepted = 0
        var lastSeq = 0
        var inOrder = true
        while accepted < total, let l = c.readLine(timeoutMillis: 30_000) {
            let r = try JSONSerialization.jsonObject(with: Data(l)) as? [String: Any]
            guard r?["status"] as? String == "accepted", let seq = r?["seq"] as? Int else { break }
            if seq <= lastSeq { inOrder = false }
            lastSeq = seq
            accepted += 1
        }
        await writer.value
        #expect(accepted == total)
        #expect(inOrder)
        #expect(h.wal.currentStats.fsyncs < UInt64(total / 10), "group commit: far fewer fsyncs than records")
        await h.stop()
    }

    @Test func twoHundredConcurrentConnections() async throws {
        let h = try await IngestHarness()
        let results = await withTaskGroup(of: Int.self) { group in
            for n in 0..<200 {
                group.addTask {
                    guard let c = try? h.client() else { return 0 }
                    c.send((0..<50).map { line("c\(n)-\($0)") })
                    return c.responseObjects(50).filter { $0["status"] as? String == "accepted" }.count
                }
            }
            return await group.reduce(0, +)
        }
        #expect(results == 200 * 50)
        await h.stop()
    }

    @Test func peersOutsideAllowedUIDsAreRefused() async throws {
        let h = try await IngestHarness { $0.ingest.allowedUIDs = [getuid() &+ 12345] }
        let c = try h.client()
        let r = c.responseObjects(1)
        #expect(r.first?["code"] as? String == "forbidden")
        #expect(c.readLine(timeoutMillis: 5000) == nil, "then closed")
        await h.stop()
        let ok = try await IngestHarness { $0.ingest.allowedUIDs = [getuid()] }
        let c2 = try ok.client()
        c2.send([line("allowed")])
        #expect(c2.responseObjects(1).first?["status"] as? String == "accepted")
        await ok.stop()
    }

    @Test func connectionsBeyondTheLimitAreRefusedCleanly() async throws {
        let h = try await IngestHarness { $0.ingest.maxConnections = 2 }
        let a = try h.client()
        let b = try h.client()
        a.send([line("a")])
        b.send([line("b")])
        #expect(a.responseObjects(1).first?["status"] as? String == "accepted")
        #expect(b.responseObjects(1).first?["status"] as? String == "accepted")
        let extra = try h.client()
        let r = extra.responseObjects(1)
        #expect(r.first?["code"] as? String == "too_many_connections")
        #expect(r.first?["retryable"] as? Bool == true)
        #expect(extra.readLine(timeoutMillis: 5000) == nil)
        await h.stop()
    }

    @Test func aClientThatDisconnectsMidLineHurtsNobody() async throws {
        let h = try await IngestHarness()
        let a = try h.client()
        a.write(Array(#"{"id":"half","sink":"file:x","pay"#.utf8))
        a.finishWriting()
        #expect(a.readLine(timeoutMillis: 5000) == nil, "the partial line is discarded, not answered")
        let b = try h.client()
        b.send([line("whole")])
        #expect(b.responseObjects(1).first?["status"] as? String == "accepted")
        #expect(try readIDs(h) == ["whole"])
        await h.stop()
    }

    @Test func aClientThatNeverReadsIsThrottledAndOthersAreServed() async throws {
        let h = try await IngestHarness()
        let greedy = try h.client()
        // Non-blocking writes until the kernel buffers fill: sinkd stopped reading.
        let flags = fcntl(greedy.fd, F_GETFL)
        _ = fcntl(greedy.fd, F_SETFL, flags | O_NONBLOCK)
        let chunk = Array(((0..<1000).map { line("g-\($0)") + "\n" }.joined()).utf8)
        var written = 0
        var blocked = false
        for _ in 0..<10_000 {
            let n = chunk.withUnsafeBytes { send(greedy.fd, $0.baseAddress!, $0.count, Int32(MSG_NOSIGNAL)) }
            if n < 0 {
                if errno == EAGAIN {
                    blocked = true
                    break
                }
                break
            }
            written += n
        }
        #expect(blocked, "the server stopped reading from a client that does not read (\(written) bytes written)")
        #expect(written < 200 << 20)
        let other = try h.client()
        other.send([line("other")])
        #expect(other.responseObjects(1).first?["status"] as? String == "accepted")
        await h.stop()
    }

    @Test func idleConnectionsAreClosed() async throws {
        let h = try await IngestHarness { $0.ingest.idleTimeout = .milliseconds(200) }
        let c = try h.client()
        c.send([line("x")])
        #expect(c.responseObjects(1).count == 1)
        #expect(c.readLine(timeoutMillis: 5000) == nil, "closed after the idle timeout")
        await h.stop()
    }

    @Test func staleSocketIsReplacedAndALiveOneIsAnError() async throws {
        let h = try await IngestHarness()
        #expect(throws: IngestServerError.self) {
            try IngestService.prepareSocketPath(h.socketPath)
        }
        await h.stop()
        // A socket file nobody listens on (a crashed sinkd's) is replaced.
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent(
            "sinkd-stale-\(UUID().uuidString.prefix(8))"
        ).path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/s.sock"
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: Array(path.utf8))
            raw[path.utf8.count] = 0
        }
        _ = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        close(fd)
        #expect(FileManager.default.fileExists(atPath: path))
        try IngestService.prepareSocketPath(path)
        #expect(!FileManager.default.fileExists(atPath: path))
        // A regular file in the way is an error, not deleted.
        _ = FileManager.default.createFile(atPath: path, contents: Data("x".utf8))
        #expect(throws: IngestServerError.self) { try IngestService.prepareSocketPath(path) }
        #expect(FileManager.default.fileExists(atPath: path))
    }

    @Test func socketModeIsApplied() async throws {
        let h = try await IngestHarness { $0.ingest.socketMode = 0o600 }
        let attributes = try FileManager.default.attributesOfItem(atPath: h.socketPath)
        #expect((attributes[.posixPermissions] as? Int) == 0o600)
        await h.stop()
    }

    @Test func shutdownAnswersWhatWasReadAndAcceptedRecordsAreDurable() async throws {
        let h = try await IngestHarness()
        let c = try h.client()
        c.send((0..<500).map { line("s-\($0)") })
        let first = c.responseObjects(500)
        await h.service.shutDown()
        h.wal.shutdown()
        #expect(first.allSatisfy { $0["status"] as? String == "accepted" })
        let ids = try readIDs(h)
        #expect(Set(ids) == Set((0..<500).map { "s-\($0)" }))
        try? FileManager.default.removeItem(atPath: h.directory)
    }
}

/// The ids in the harness's WAL, read offline.
func readIDs(_ h: IngestHarness) throws -> [String] {
    var ids: [String] = []
    _ = try WALInspector.inspect(directory: h.config.wal.directory) { ids.append($0.record.id) }
    return ids
}
