/// The one-screen summary `sinkd check-config` prints for a valid configuration.
/// Secret values never appear: credentials are shown as "(set)".
public enum ConfigSummary {
    public static func render(_ c: SinkdConfig) -> String {
        var lines: [String] = []
        func add(_ key: String, _ value: String) {
            lines.append("  " + key.padding(toLength: 14) + value)
        }
        lines.append("\(c.sourcePath): OK")
        add(
            "ingest",
            "\(c.ingest.socket) (mode 0\(String(c.ingest.socketMode, radix: 8)), max record \(Units.formatSize(c.ingest.maxRecordBytes)), max \(c.ingest.maxConnections) connections\(peerRule(c.ingest)))"
        )
        add("control", c.control.socket)
        add(
            "wal",
            "\(c.wal.directory) (segments \(Units.formatSize(c.wal.segmentSize)), max \(Units.formatSize(c.wal.maxSize)), fsync \(fsyncText(c.wal)), when full: \(c.wal.whenFull.rawValue))"
        )
        let r = c.delivery.retry
        add(
            "retry",
            "backoff \(Units.formatDuration(r.initialBackoff)) x\(r.multiplier) up to \(Units.formatDuration(r.maxBackoff)), \(r.maxAttempts == 0 ? "unlimited attempts" : "\(r.maxAttempts) attempts")\(r.maxAge == .zero ? "" : ", max age \(Units.formatDuration(r.maxAge))")"
        )
        add(
            "dedupe",
            "\(Units.formatDuration(c.delivery.dedupeWindow)) window, at most \(c.delivery.dedupeMaxEntries) entries")
        add("dead letters", c.delivery.deadLetterDirectory)
        add("log", "level \(c.log.level.rawValue), format \(c.log.format.rawValue)")
        add("metrics", c.metrics.listen.isEmpty ? "off" : "http://\(c.metrics.listen)/metrics")
        let families = c.sinks.configuredFamilies.sorted()
        if families.isEmpty {
            lines.append("  sinks         none configured: every record would be rejected with unknown_sink")
        } else {
            lines.append("  sinks:")
            for family in families {
                let o = c.sinks.options(for: family)!
                let detail = familyDetail(family, c.sinks)
                lines.append(
                    "    " + family.rawValue.padding(toLength: 12) + detail
                        + " [pool \(o.poolSize), in flight \(o.maxInFlight), batch \(o.batchSize)"
                        + (o.linger > .zero ? ", linger \(Units.formatDuration(o.linger))" : "")
                        + ", \(o.ordering.rawValue) ordering]")
            }
        }
        return lines.joined(separator: "\n")
    }

    private static func peerRule(_ i: IngestConfig) -> String {
        if i.allowedUIDs.isEmpty, i.allowedGIDs.isEmpty { return "" }
        var parts: [String] = []
        if !i.allowedUIDs.isEmpty { parts.append("uids " + i.allowedUIDs.map(String.init).joined(separator: ",")) }
        if !i.allowedGIDs.isEmpty { parts.append("gids " + i.allowedGIDs.map(String.init).joined(separator: ",")) }
        return ", only " + parts.joined(separator: " or ")
    }

    private static func fsyncText(_ w: WALConfig) -> String {
        switch w.fsync {
        case .always: "always"
        case .interval: "every \(Units.formatDuration(w.fsyncInterval))"
        case .never: "never (no durability: benchmarks only)"
        }
    }

    private static func familyDetail(_ family: ConfigFamily, _ s: SinksConfig) -> String {
        switch family {
        case .file: return "→ \(s.file!.directory)/NAME.ndjson"
        case .http:
            let names = s.http!.endpoints.keys.sorted()
            return names.isEmpty ? "no endpoints" : "endpoints " + names.joined(separator: ", ")
        case .redis: return redacted(s.redis!.url)
        case .sqs:
            let q = s.sqs!
            let credentials = q.accessKeyID.isEmpty ? "credentials from the environment" : "credentials (set)"
            return "region \(q.region)\(q.endpoint.isEmpty ? "" : ", endpoint \(q.endpoint)"), \(credentials)"
        case .amqp: return s.amqp!.urls.map(redacted).joined(separator: ", ")
        case .nats: return s.nats!.servers.map(redacted).joined(separator: ", ")
        case .conductor: return redacted(s.conductor!.postgresURL)
        case .kafka: return s.kafka!.bootstrapServers.joined(separator: ", ")
        }
    }

    /// Hides the password of `scheme://user:password@host`.
    static func redacted(_ url: String) -> String {
        guard let scheme = url.firstRange(of: "://"), let at = url[scheme.upperBound...].lastIndex(of: "@") else {
            return url
        }
        let userInfo = url[scheme.upperBound..<at]
        guard let colon = userInfo.firstIndex(of: ":") else { return url }
        return String(url[..<colon]) + ":(set)" + String(url[at...])
    }
}

extension String {
    func padding(toLength length: Int) -> String {
        count >= length ? self + " " : self + String(repeating: " ", count: length - count)
    }
}
