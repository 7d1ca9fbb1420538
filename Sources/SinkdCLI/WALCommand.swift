import ArgumentParser
import Foundation
import SinkdCore
import SinkdIngest
import SinkdWAL

struct WALCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "wal",
        abstract: "Inspect a write-ahead log offline.",
        subcommands: [Verify.self, Dump.self]
    )

    /// The directory: the argument, else wal.directory of the configuration.
    struct Location: ParsableArguments {
        @Argument(
            help: ArgumentHelp("The WAL directory. Default: wal.directory of the configuration.", valueName: "dir"))
        var directory: String?

        @OptionGroup var config: ConfigOption

        func resolve() throws -> String {
            if let directory { return directory }
            return try config.load().wal.directory
        }
    }

    struct Verify: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Check every segment's framing and checksums.",
            discussion:
                "Prints one line per segment and a total. Exit 0 when every frame is intact, 1 when a corrupt frame, a torn tail or an unreadable segment was found."
        )

        @OptionGroup var location: Location

        func run() throws {
            let directory = try location.resolve()
            let reports: [WALInspector.SegmentReport]
            do {
                reports = try WALInspector.inspect(directory: directory)
            } catch {
                Terminal.printError("sinkd wal verify: \(error)")
                throw ExitCode(2)
            }
            var damaged = false
            var records = 0
            for r in reports {
                records += r.records
                var line = "\(r.name): \(r.records) records, \(r.bytes) bytes"
                if let first = r.firstSeq, let last = r.lastSeq { line += ", seq \(first)-\(last)" }
                if let why = r.unreadable {
                    line += ", UNREADABLE: \(why)"
                    damaged = true
                }
                for c in r.corrupt {
                    line += ", CORRUPT frame at offset \(c.offset) (\(c.length) bytes)"
                    damaged = true
                }
                if let t = r.tornTail {
                    line += ", TORN TAIL at offset \(t.offset) (\(t.length) bytes)"
                    damaged = true
                }
                print(line)
            }
            print("\(reports.count) segments, \(records) records: \(damaged ? "DAMAGED" : "OK")")
            if damaged { throw ExitCode(1) }
        }
    }

    struct Dump: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print every record as one JSON line: seq, sink, id, context fields, acceptedAt, payload."
        )

        @OptionGroup var location: Location

        @Option(help: ArgumentHelp("Only records of this sink identity (e.g. file:events).", valueName: "sink"))
        var sink: String?

        func run() throws {
            let directory = try location.resolve()
            var out: [UInt8] = []
            out.reserveCapacity(1 << 16)
            _ = try WALInspector.inspect(directory: directory) { item in
                if let sink, item.record.sink != sink { return }
                RecordJSON.append(item.record, seq: item.seq, to: &out)
                if out.count > 1 << 16 {
                    FileHandle.standardOutput.write(Data(out))
                    out.removeAll(keepingCapacity: true)
                }
            }
            FileHandle.standardOutput.write(Data(out))
        }
    }
}

/// A record as one JSON line; the payload is written as the JSON text it was received as.
enum RecordJSON {
    static func append(_ r: EventRecord, seq: UInt64, to out: inout [UInt8]) {
        out.append(contentsOf: #"{"seq":"#.utf8)
        out.append(contentsOf: String(seq).utf8)
        func field(_ name: String, _ value: String?) {
            guard let value else { return }
            out.append(contentsOf: ",\"\(name)\":".utf8)
            JSONText.appendString(value, to: &out)
        }
        field("sink", r.sink)
        field("id", r.id)
        field("workflowInstanceId", r.workflowInstanceId)
        field("workflowType", r.workflowType)
        if let v = r.workflowVersion { out.append(contentsOf: ",\"workflowVersion\":\(v)".utf8) }
        field("correlationId", r.correlationId)
        field("taskRefName", r.taskRefName)
        if let p = r.priority { out.append(contentsOf: ",\"priority\":\(p)".utf8) }
        out.append(contentsOf: ",\"acceptedAt\":\(r.acceptedAtMillis),\"payload\":".utf8)
        out.append(contentsOf: r.payload)
        out.append(contentsOf: "}\n".utf8)
    }
}
