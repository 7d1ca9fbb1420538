import ArgumentParser
import Foundation
import SinkdCore
import SinkdDelivery
import SinkdIngest

struct DLQ: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dlq",
        abstract: "List, show, replay or purge dead letters (records that could never be delivered).",
        subcommands: [List.self, Show.self, Replay.self, Purge.self]
    )

    /// --sink, --since, --until.
    struct Filter: ParsableArguments {
        @Option(help: "Only this sink (its identity, e.g. sqs:orders).")
        var sink: String?

        @Option(
            help: ArgumentHelp(
                "Only dead letters from this time on: an age like 2h, or an ISO 8601 time.", valueName: "time"))
        var since: String?

        @Option(
            help: ArgumentHelp(
                "Only dead letters up to this time: an age like 30m, or an ISO 8601 time.", valueName: "time"))
        var until: String?

        func millis(_ text: String?) throws -> UInt64? {
            guard let text else { return nil }
            let now = UInt64(Date().timeIntervalSince1970 * 1000)
            if let age = Units.parseDuration(text) { return now - min(now, UInt64(age.milliseconds)) }
            let formatter = ISO8601DateFormatter()
            if let date = formatter.date(from: text) { return UInt64(date.timeIntervalSince1970 * 1000) }
            throw ValidationError("'\(text)' is neither an age like 2h nor an ISO 8601 time like 2026-11-27T10:00:00Z")
        }

        var request: [String: Any] {
            get throws {
                var r: [String: Any] = [:]
                if let sink { r["sink"] = sink }
                if let s = try millis(since) { r["since"] = s }
                if let u = try millis(until) { r["until"] = u }
                return r
            }
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "One line per dead letter: time, sink, seq, id, attempts, error.")
        @OptionGroup var config: ConfigOption
        @OptionGroup var filter: Filter

        func run() throws {
            let store = try DeadLetterStore(directory: config.load().delivery.deadLetterDirectory)
            let formatter = ISO8601DateFormatter()
            var count = 0
            // Streamed, sink by sink, each oldest first: a store of any size lists in constant memory.
            try store.forEachEntry(
                sink: filter.sink, since: filter.millis(filter.since), until: filter.millis(filter.until)
            ) { e in
                let when = formatter.string(from: Date(timeIntervalSince1970: Double(e.deadLetteredMillis) / 1000))
                print("\(when)  \(e.record.sink)  seq \(e.seq)  id \(e.record.id)  attempts \(e.attempts)  \(e.error)")
                count += 1
                return true
            }
            print("\(count) dead letter\(count == 1 ? "" : "s")")
        }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print dead letters whole, as JSON lines (record, payload, error, attempts, times).")
        @OptionGroup var config: ConfigOption
        @OptionGroup var filter: Filter
        @Argument(help: "Only the dead letters with these seqs.")
        var seqs: [UInt64] = []

        func run() throws {
            let store = try DeadLetterStore(directory: config.load().delivery.deadLetterDirectory)
            var out: [UInt8] = []
            try store.forEachEntry(
                sink: filter.sink, since: filter.millis(filter.since), until: filter.millis(filter.until)
            ) { e in
                guard seqs.isEmpty || seqs.contains(e.seq) else { return true }
                DeadLetterStore.encode(e, into: &out)
                if out.count >= 1 << 20 {
                    FileHandle.standardOutput.write(Data(out))
                    out.removeAll(keepingCapacity: true)
                }
                return true
            }
            FileHandle.standardOutput.write(Data(out))
        }
    }

    struct Replay: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Send dead letters back through the WAL to their sinks (the daemon must run).",
            discussion:
                "The records are appended to the WAL again (bypassing dedupe) and removed from the store once durable. Each is first checked as ingest would check it (a dead-letter file may have been edited by hand): one that would not pass is named with the reason, stays in the store, and the exit status is 1."
        )
        @OptionGroup var config: ConfigOption
        @OptionGroup var filter: Filter

        func run() throws {
            var request = try filter.request
            request["command"] = "dlq-replay"
            let response = try Control.request(request, socket: config.load().control.socket)
            print("replayed \(response["replayed"] as? Int ?? 0) dead letters into the WAL")
            let invalid = response["invalid"] as? [[String: Any]] ?? []
            for entry in invalid {
                Terminal.printError(
                    "sinkd dlq replay: seq \(entry["seq"] ?? "?") (\(entry["sink"] ?? "?")) not replayed, it would not pass ingest: \(entry["error"] ?? "?"); it stays in the dead-letter store"
                )
            }
            if !invalid.isEmpty { throw ExitCode(1) }
        }
    }

    struct Purge: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Delete dead letters for good (through the daemon when it runs, else directly).")
        @OptionGroup var config: ConfigOption
        @OptionGroup var filter: Filter

        func run() throws {
            let loaded = try config.load()
            var request = try filter.request
            request["command"] = "dlq-purge"
            let purged: Int
            if (try? IngestClient(path: loaded.control.socket)) != nil {
                // The daemon runs: let it purge, so that its own appends are not raced.
                purged = try Control.request(request, socket: loaded.control.socket)["purged"] as? Int ?? 0
            } else {
                let store = try DeadLetterStore(directory: loaded.delivery.deadLetterDirectory)
                purged = try store.purge(
                    sink: filter.sink, since: filter.millis(filter.since), until: filter.millis(filter.until))
            }
            print("purged \(purged) dead letters")
        }
    }
}
