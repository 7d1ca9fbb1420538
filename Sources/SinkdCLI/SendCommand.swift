import ArgumentParser
import Foundation
import SinkdCore
import SinkdIngest
import SinkdWAL

struct Send: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Send records to a running sinkd and print its responses.",
        discussion: """
            Without --sink/--id/--payload, reads request lines (NDJSON, docs/PROTOCOL.md) from \
            standard input and sends them pipelined. Prints one response line per request. Exit 0 \
            only if every record was accepted or duplicate, 1 if any was rejected or unanswered, \
            2 if sinkd could not be reached.
            """
    )

    @Option(help: ArgumentHelp("The ingest socket. Default: ingest.socket of the configuration.", valueName: "path"))
    var socket: String?

    @OptionGroup var config: ConfigOption

    @Option(help: "Build one request with this sink (e.g. file:events).")
    var sink: String?

    @Option(help: "The request's id (Conductor's taskId). Default: a random UUID.")
    var id: String?

    @Option(help: ArgumentHelp("The request's payload as JSON text.", valueName: "json"))
    var payload: String?

    @Option(help: "workflowType of the request (for conductor sinks).")
    var workflowType: String?

    @Option(help: "taskRefName of the request (for conductor sinks).")
    var taskRefName: String?

    func validate() throws {
        if sink == nil, id != nil || payload != nil {
            throw ValidationError("--id and --payload build a request together with --sink")
        }
    }

    func run() throws {
        let path = try socket ?? config.load().ingest.socket
        let lines: [[UInt8]]
        if let sink {
            var record = EventRecord(id: id ?? UUID().uuidString, sink: sink, payload: Array((payload ?? "{}").utf8))
            record.workflowType = workflowType
            record.taskRefName = taskRefName
            let line = RequestParser.requestLine(for: record)
            lines = [line]
        } else {
            let input = FileHandle.standardInput.readDataToEndOfFile()
            lines = input.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: true)
                .map { Array($0) }
                .filter { !$0.allSatisfy { $0 == 0x20 || $0 == 0x09 || $0 == 0x0D } }
        }
        let client: IngestClient
        do {
            client = try IngestClient(path: path)
        } catch let failure as IngestClient.Failure where failure.isPermissionDenied {
            Terminal.printError("sinkd send: \(failure); the ingest socket is for members of group sinkd: `sudo usermod -aG sinkd $USER`, then log in again")
            throw ExitCode(2)
        } catch {
            Terminal.printError("sinkd send: \(error)")
            throw ExitCode(2)
        }
        // Write on one thread while reading on this one: a pipelining client must keep reading.
        BlockingThread.detach {
            var chunk: [UInt8] = []
            for line in lines {
                chunk += line
                chunk.append(UInt8(ascii: "\n"))
                if chunk.count >= 1 << 16 {
                    guard client.write(chunk) else { return }
                    chunk.removeAll(keepingCapacity: true)
                }
            }
            client.write(chunk)
            client.finishWriting()
        }
        var answered = 0
        var allGood = true
        var output: [UInt8] = []
        while answered < lines.count, let response = client.readLine() {
            answered += 1
            if !(response.starts(with: Array(#"{"id":"#.utf8)) && (contains(response, #""status":"accepted""#) || contains(response, #""status":"duplicate""#))) {
                allGood = false
            }
            output += response
            output.append(UInt8(ascii: "\n"))
            if output.count > 1 << 16 {
                FileHandle.standardOutput.write(Data(output))
                output.removeAll(keepingCapacity: true)
            }
        }
        FileHandle.standardOutput.write(Data(output))
        if answered < lines.count {
            Terminal.printError("sinkd send: \(lines.count - answered) of \(lines.count) requests were not answered (the connection closed)")
            throw ExitCode(1)
        }
        if !allGood { throw ExitCode(1) }
    }

    private func contains(_ haystack: [UInt8], _ needle: String) -> Bool {
        let n = Array(needle.utf8)
        guard haystack.count >= n.count else { return false }
        for i in 0...(haystack.count - n.count) where haystack[i] == n[0] && Array(haystack[i..<(i + n.count)]) == n {
            return true
        }
        return false
    }
}
