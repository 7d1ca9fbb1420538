import ArgumentParser
import Foundation
import SinkdControl
import SinkdCore
import SinkdIngest

/// A request to the running daemon's control socket.
enum Control {
    static func request(_ object: [String: Any], socket: String) throws -> [String: Any] {
        let response = try exchange(object, socket: socket)
        if response["ok"] as? Bool != true {
            throw ControlError(response["error"] as? String ?? "sinkd refused the request")
        }
        return response
    }

    /// Sends one request and returns the response, whether `ok` or not.
    static func exchange(_ object: [String: Any], socket: String) throws -> [String: Any] {
        let client: IngestClient
        do {
            client = try IngestClient(path: socket)
        } catch let failure as IngestClient.Failure where failure.isPermissionDenied {
            // The control socket is root's alone (systemd/sinkd-control.socket): status, reload and
            // dead letters reveal or change what sinkd holds.
            throw ControlError(
                "permission denied on sinkd's control socket \(socket): only root may use it; run the command with sudo, e.g. `sudo sinkd status`"
            )
        } catch {
            throw ControlError("cannot reach sinkd's control socket \(socket) (is sinkd running?): \(error)")
        }
        let data = try JSONSerialization.data(withJSONObject: object)
        guard client.write(Array(data) + [0x0A]), let line = client.readLine(timeoutMillis: 60_000) else {
            throw ControlError("sinkd did not answer on \(socket)")
        }
        guard let response = try JSONSerialization.jsonObject(with: Data(line)) as? [String: Any] else {
            throw ControlError("sinkd answered something that is not JSON")
        }
        return response
    }

    struct ControlError: Error, CustomStringConvertible {
        var description: String
        init(_ description: String) { self.description = description }
    }
}

struct Status: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show the running daemon's sinks, backlog and WAL.",
        discussion:
            "Asks the daemon over control.socket. Exit 0 with the table (or JSON with --json); 2 if sinkd cannot be reached."
    )

    @OptionGroup var config: ConfigOption

    @Flag(help: "Print the status as JSON, for machines.")
    var json = false

    func run() throws {
        let socket = try config.load().control.socket
        let response: [String: Any]
        do {
            response = try Control.request(["command": "status"], socket: socket)
        } catch {
            Terminal.printError("sinkd status: \(error)")
            throw ExitCode(2)
        }
        let data = try JSONSerialization.data(withJSONObject: response["status"] ?? [:], options: [.sortedKeys])
        if json {
            print(String(decoding: data, as: UTF8.self))
            return
        }
        let report = try JSONDecoder().decode(StatusReport.self, from: data)
        print(StatusTable.render(report))
    }
}

enum StatusTable {
    static func render(_ r: StatusReport) -> String {
        var lines = [
            "sinkd \(r.version), up \(age(r.uptimeSeconds)), config \(r.configPath) (generation \(r.configGeneration))",
            "WAL: \(r.walSegments) segments, \(Units.formatSize(r.walBytes)), next seq \(r.walNextSeq); \(r.ingestConnections) ingest connections"
                + (r.walDiskFullSinceMillis.map {
                    ", DISK FULL since \(Date(timeIntervalSince1970: Double($0) / 1000)) (records held, clients wait)"
                } ?? "")
                + ((r.walWriteFailures ?? 0) > 0
                    ? ", \(r.walWriteFailures!) write failures (\(r.walRewrittenRecords ?? 0) records rewritten, \(r.walRecordsAtRisk ?? 0) at risk)"
                    : ""),
            "",
        ]
        let header = [
            "SINK", "STATE", "BACKLOG", "BYTES", "OLDEST", "DELIVERED", "RETRIED", "DEAD", "IN FLIGHT", "LAST ERROR",
        ]
        var rows = [header]
        for s in r.sinks {
            rows.append([
                s.sink, s.state, String(s.backlogRecords), Units.formatSize(Int(s.backlogBytes)),
                s.oldestUndeliveredSeconds.map(age) ?? "-",
                String(s.delivered), String(s.retried), String(s.deadLettered), String(s.inFlight), s.lastError ?? "",
            ])
        }
        if r.sinks.isEmpty { rows.append(["(no sink has records)", "", "", "", "", "", "", "", "", ""]) }
        let widths = (0..<header.count).map { c in rows.map { $0[c].count }.max() ?? 0 }
        for row in rows {
            lines.append(
                row.enumerated().map { c, cell in
                    c == row.count - 1 ? cell : cell.padding(toLength: widths[c], withPad: " ", startingAt: 0)
                }.joined(separator: "  ").trimmingCharacters(in: .whitespaces))
        }
        return lines.joined(separator: "\n")
    }

    static func age(_ seconds: Double) -> String {
        let s = Int(seconds)
        if s < 60 { return "\(s)s" }
        if s < 3600 { return "\(s / 60)m\(s % 60)s" }
        if s < 86_400 { return "\(s / 3600)h\(s % 3600 / 60)m" }
        return "\(s / 86_400)d\(s % 86_400 / 3600)h"
    }
}
