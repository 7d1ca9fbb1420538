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
        var single: [UInt8]?
        if let sink {
            var record = EventRecord(id: id ?? UUID().uuidString, sink: sink, payload: Array((payload ?? "{}").utf8))
            record.workflowType = workflowType
            record.taskRefName = taskRefName
            single = RequestParser.requestLine(for: record)
        }
        let client: IngestClient
        do {
            client = try IngestClient(path: path)
        } catch let failure as IngestClient.Failure where failure.isPermissionDenied {
            Terminal.printError(
                "sinkd send: \(failure); the ingest socket is for members of group sinkd: `sudo usermod -aG sinkd $USER`, then log in again"
            )
            throw ExitCode(2)
        } catch {
            Terminal.printError("sinkd send: \(error)")
            throw ExitCode(2)
        }
        // Write on one thread while reading on this one: a pipelining client must keep reading.
        // Standard input is streamed (64 KiB at a time), never read whole: memory stays the same
        // whatever is piped in, and sinkd's own bound on unanswered bytes holds the writer back.
        let sent = SentCount()
        BlockingThread.detach { [single] in
            if let single {
                client.write(single + [UInt8(ascii: "\n")])
                sent.finish(1)
            } else {
                sent.finish(Self.stream(from: STDIN_FILENO, to: client))
            }
            client.finishWriting()
        }
        var answered = 0
        var allGood = true
        var output: [UInt8] = []
        output.reserveCapacity(1 << 17)
        // sinkd answers every request it read, then closes once the writer shut its side.
        while let response = client.readLine() {
            answered += 1
            if !(response.starts(with: Array(#"{"id":"#.utf8))
                && (contains(response, #""status":"accepted""#) || contains(response, #""status":"duplicate""#)))
            {
                allGood = false
            }
            output += response
            output.append(UInt8(ascii: "\n"))
            if output.count > 1 << 16 {
                FileHandle.standardOutput.write(Data(output))
                output.removeAll(keepingCapacity: true)
            }
            if let total = sent.total, answered >= total { break }
        }
        FileHandle.standardOutput.write(Data(output))
        let total = sent.wait()
        if answered < total {
            Terminal.printError(
                "sinkd send: \(total - answered) of \(total) requests were not answered (the connection closed)")
            throw ExitCode(1)
        }
        if !allGood { throw ExitCode(1) }
    }

    /// Copies the non-blank lines of `fd` to `client`, each ending in a newline (a last line
    /// without one gets it), 64 KiB at a time; returns how many were sent (stops early if sinkd
    /// closed the connection).
    static func stream(from fd: CInt, to client: IngestClient) -> Int {
        var input = [UInt8](repeating: 0, count: 1 << 16)
        var out: [UInt8] = []
        out.reserveCapacity(1 << 17)
        var line: [UInt8] = []  // the part of a line seen so far (a line longer than a read)
        var count = 0
        func endLine() {
            guard !line.allSatisfy({ $0 == 0x20 || $0 == 0x09 || $0 == 0x0D }) else {
                line.removeAll(keepingCapacity: true)
                return
            }
            out += line
            out.append(UInt8(ascii: "\n"))
            line.removeAll(keepingCapacity: true)
            count += 1
        }
        while true {
            let n = input.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0, errno == EINTR { continue }
            if n <= 0 { break }
            var start = 0
            while let newline = input[start..<n].firstIndex(of: UInt8(ascii: "\n")) {
                line += input[start..<newline]
                endLine()
                start = newline + 1
            }
            line += input[start..<n]
            if out.count >= 1 << 16 {
                guard client.write(out) else { return count }
                out.removeAll(keepingCapacity: true)
            }
        }
        endLine()
        client.write(out)
        return count
    }

    /// How many requests the writer sent, once it is done.
    final class SentCount: @unchecked Sendable {
        private let lock = NSLock()
        private var value: Int?
        private let done = DispatchSemaphore(value: 0)

        func finish(_ count: Int) {
            lock.withLock { value = count }
            done.signal()
        }

        /// Known once the writer finished; nil before.
        var total: Int? { lock.withLock { value } }

        func wait() -> Int {
            done.wait()
            done.signal()
            return lock.withLock { value ?? 0 }
        }
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
