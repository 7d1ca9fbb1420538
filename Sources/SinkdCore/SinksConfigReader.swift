/// Reads the `sinks:` section: one subsection per sink family, each with its own keys plus the
/// pipeline options every family takes (pool_size, max_in_flight, batch_size, idle_timeout,
/// ordering, retry).
struct SinksReader {
    let section: ConfigSection
    let delivery: DeliveryConfig
    let paths: PathResolver

    func read() -> SinksConfig {
        var sinks = SinksConfig()
        section.readingAll { s in
            sinks.file = family(s, .file) { s, options in
                var c = FileSinkConfig()
                c.directory = paths.absolute(s.string("directory", default: c.directory))
                c.options = options
                return c
            }
            sinks.http = family(s, .http) { s, options in
                var c = HTTPSinkConfig()
                c.options = options
                for (name, path, node) in s.namedEntries("endpoints") {
                    if !SinkName.isValidFileName(name) {
                        s.diagnostics.report(
                            path, at: node.mark,
                            "endpoint names may use letters, digits, '.', '_' and '-' only, got \"\(name)\"")
                    }
                    let e = ConfigSection(node, path: path, diagnostics: s.diagnostics)
                    let url = e.serverURL(
                        "url", default: "", schemes: ["http", "https"], expected: "an http:// or https:// URL")
                    if url.isEmpty, e.node("url") == nil {
                        s.diagnostics.report(
                            path + ".url", at: node.mark, "is required: the URL records for http:\(name) are POSTed to")
                    }
                    var endpoint = HTTPEndpoint(url: url)
                    for (header, headerPath, headerNode) in e.namedEntries("headers") {
                        if let (text, _, _) = e.scalar(headerNode, path: headerPath, expected: "a header value") {
                            endpoint.headers[header] = text
                        }
                    }
                    endpoint.timeout = e.duration("timeout", default: endpoint.timeout)
                    e.finish()
                    c.endpoints[name] = endpoint
                }
                return c
            }
            sinks.redis = family(s, .redis) { s, options in
                var c = RedisSinkConfig()
                c.url = s.serverURL(
                    "url", default: c.url, schemes: ["redis"], hostRequired: false, expected: "a redis:// URL")
                c.maxlen = s.int("maxlen", default: c.maxlen, range: 0...Int.max)
                let replyTimeout = s.duration("reply_timeout", default: c.replyTimeout)
                if replyTimeout < .milliseconds(100) || replyTimeout > .seconds(600) {
                    s.diagnostics.report(
                        s.child("reply_timeout"), at: s.node("reply_timeout")?.mark,
                        "must be between 100ms and 10m, got \(Units.formatDuration(replyTimeout))")
                } else {
                    c.replyTimeout = replyTimeout
                }
                c.options = options
                return c
            }
            sinks.sqs = family(s, .sqs) { s, options in
                var c = SQSSinkConfig()
                c.region = s.string("region", default: c.region)
                c.endpoint = s.value("endpoint", default: c.endpoint, expected: "an http:// or https:// URL, or \"\"") {
                    text in
                    text.isEmpty || text.hasPrefix("http://") || text.hasPrefix("https://") ? text : nil
                }
                c.accountID = s.value(
                    "account_id", default: c.accountID, expected: "a 12-digit AWS account id, or \"\""
                ) { text in
                    text.isEmpty || (text.count == 12 && text.allSatisfy(\.isASCIIDigit)) ? text : nil
                }
                c.accessKeyID = s.string("access_key_id", default: c.accessKeyID)
                c.secretAccessKey = s.string("secret_access_key", default: c.secretAccessKey)
                c.sessionToken = s.string("session_token", default: c.sessionToken)
                c.profile = s.string("profile", default: c.profile)
                c.stsEndpoint = s.value(
                    "sts_endpoint", default: c.stsEndpoint, expected: "an http:// or https:// URL, or \"\""
                ) { text in
                    text.isEmpty || text.hasPrefix("http://") || text.hasPrefix("https://") ? text : nil
                }
                c.maxBatchBytes = s.checkRange(
                    "max_batch_bytes", s.size("max_batch_bytes", default: c.maxBatchBytes), 1024...(1 << 20),
                    fallback: c.maxBatchBytes)
                c.maxMessageBytes = s.checkRange(
                    "max_message_bytes", s.size("max_message_bytes", default: c.maxMessageBytes), 0...(1 << 20),
                    fallback: c.maxMessageBytes)
                c.createMissingQueues = s.bool("create_missing_queues", default: c.createMissingQueues)
                c.fifoGroupID = s.string("fifo_group_id", default: c.fifoGroupID)
                c.messageAttributes = s.bool("message_attributes", default: c.messageAttributes)
                c.options = options
                return c
            }
            sinks.amqp = family(s, .amqp) { s, options in
                var c = AMQPSinkConfig()
                c.urls = s.list(
                    "urls", default: c.urls, expected: "an amqp:// or amqps:// URL with a host and a port of 1-65535"
                ) { text in
                    ServerURL.problem(text, schemes: ["amqp", "amqps"]) == nil ? text : nil
                }
                if let node = s.node("urls"), node.sequence?.count == 0 {
                    s.diagnostics.report(s.child("urls"), at: node.mark, "needs at least one broker URL")
                }
                c.heartbeat = s.duration("heartbeat", default: c.heartbeat)
                let confirmTimeout = s.duration("confirm_timeout", default: c.confirmTimeout)
                if confirmTimeout < .milliseconds(100) || confirmTimeout > .seconds(600) {
                    s.diagnostics.report(
                        s.child("confirm_timeout"), at: s.node("confirm_timeout")?.mark,
                        "must be between 100ms and 10m, got \(Units.formatDuration(confirmTimeout))")
                } else {
                    c.confirmTimeout = confirmTimeout
                }
                c.queueType = s.choice("queue_type", default: c.queueType)
                c.contentType = s.string("content_type", default: c.contentType)
                c.contentEncoding = s.string("content_encoding", default: c.contentEncoding)
                c.declare = s.bool("declare", default: c.declare)
                c.connections = s.int("connections", default: c.connections, range: 1...64)
                c.tls = readTLS(s.section("tls"))
                c.options = options
                return c
            }
            sinks.nats = family(s, .nats) { s, options in
                var c = NATSSinkConfig()
                c.servers = s.list(
                    "servers", default: c.servers,
                    expected: "a nats://, tls:// or HOST:PORT server address with a port of 1-65535"
                ) { text in
                    ServerURL.problem(text, schemes: ["nats", "tls"]) == nil || HostPort(text) != nil ? text : nil
                }
                if let node = s.node("servers"), node.sequence?.count == 0 {
                    s.diagnostics.report(s.child("servers"), at: node.mark, "needs at least one server address")
                }
                c.user = s.string("user", default: c.user)
                c.password = s.string("password", default: c.password)
                c.token = s.string("token", default: c.token)
                c.nkeySeed = s.string("nkey_seed", default: c.nkeySeed)
                c.credentialsFile = paths.absolute(s.string("credentials_file", default: c.credentialsFile))
                c.tls = readTLS(s.section("tls"))
                s.section("jsm").readingAll { j in
                    c.jsmSubjectPrefix = j.string("subject_prefix", default: c.jsmSubjectPrefix)
                    c.jsmCreateStream = j.bool("create_stream", default: c.jsmCreateStream)
                }
                c.options = options
                return c
            }
            sinks.conductor = family(s, .conductor) { s, options in
                var c = ConductorSinkConfig()
                s.section("postgres").readingAll { p in
                    c.postgresURL = p.serverURL(
                        "url", default: c.postgresURL, schemes: ["postgres", "postgresql"], hostRequired: false,
                        expected: "a postgres:// URL")
                    if p.node("host") != nil { c.host = p.string("host", default: "") }
                    if p.node("port") != nil { c.port = p.int("port", default: 5432, range: 1...65_535) }
                    if p.node("database") != nil { c.database = p.string("database", default: "") }
                    if p.node("user") != nil { c.user = p.string("user", default: "") }
                    if p.node("password") != nil { c.password = p.string("password", default: "") }
                    if p.node("sslmode") != nil { c.sslMode = p.choice("sslmode", default: PostgresSSLMode.prefer) }
                    c.caFile = paths.absolute(p.string("ca_file", default: c.caFile))
                }
                c.timeZone = s.string("time_zone", default: c.timeZone)
                c.options = options
                return c
            }
            sinks.kafka = family(s, .kafka) { s, options in
                var c = KafkaSinkConfig()
                c.bootstrapServers = s.list(
                    "bootstrap_servers", default: c.bootstrapServers, expected: "a HOST:PORT broker address"
                ) { text in
                    KafkaSinkConfig.hostPort(text) != nil ? text : nil
                }
                if s.node("bootstrap_servers") == nil {
                    s.diagnostics.report(
                        s.child("bootstrap_servers"), at: s.mark,
                        "is required: at least one HOST:PORT of a Kafka broker")
                } else if let node = s.node("bootstrap_servers"), node.sequence?.count == 0 {
                    s.diagnostics.report(
                        s.child("bootstrap_servers"), at: node.mark, "needs at least one HOST:PORT of a Kafka broker")
                }
                c.clientID = s.string("client_id", default: c.clientID)
                c.headers = s.bool("headers", default: c.headers)
                c.createTopics = s.bool("create_topics", default: c.createTopics)
                c.compression = s.choice("compression", default: c.compression)
                let age = s.duration("metadata_max_age", default: c.metadataMaxAge)
                if age < .milliseconds(100) || age > .seconds(24 * 3600) {
                    s.diagnostics.report(
                        s.child("metadata_max_age"), at: s.node("metadata_max_age")?.mark,
                        "must be between 100ms and 24h, got \(Units.formatDuration(age))")
                } else {
                    c.metadataMaxAge = age
                }
                let timeout = s.duration("request_timeout", default: c.requestTimeout)
                if timeout < .milliseconds(100) || timeout > .seconds(600) {
                    s.diagnostics.report(
                        s.child("request_timeout"), at: s.node("request_timeout")?.mark,
                        "must be between 100ms and 10m, got \(Units.formatDuration(timeout))")
                } else {
                    c.requestTimeout = timeout
                }
                let delivery = s.duration("delivery_timeout", default: c.deliveryTimeout)
                if delivery < c.requestTimeout || delivery > .seconds(3600) {
                    s.diagnostics.report(
                        s.child("delivery_timeout"), at: s.node("delivery_timeout")?.mark,
                        "must be at least request_timeout (\(Units.formatDuration(c.requestTimeout))) and at most 1h, got \(Units.formatDuration(delivery))"
                    )
                } else {
                    c.deliveryTimeout = delivery
                }
                if s.keys.contains("sasl") {
                    var sasl = KafkaSASLConfig()
                    let node = s.node("sasl")
                    s.section("sasl").readingAll { a in
                        sasl.mechanism = a.choice("mechanism", default: sasl.mechanism)
                        sasl.username = a.string("username", default: "")
                        sasl.password = a.string("password", default: "")
                        if a.node("username") == nil || sasl.username.isEmpty {
                            a.diagnostics.report(
                                a.child("username"), at: a.node("username")?.mark ?? node?.mark,
                                "is required with sasl: the user sinkd authenticates as")
                        }
                        if a.node("password") == nil {
                            a.diagnostics.report(
                                a.child("password"), at: node?.mark, "is required with sasl: that user's password")
                        }
                    }
                    c.sasl = sasl
                } else {
                    _ = s.node("sasl")
                }
                if s.keys.contains("tls") {
                    var enabled = true
                    c.tls = readTLS(s.section("tls"), enabled: &enabled)
                    if !enabled { c.tls = nil }
                } else {
                    _ = s.node("tls")
                }
                c.options = options
                return c
            }
        }
        return sinks
    }

    /// Reads one family's subsection when present: its own keys through `body`, then the shared
    /// pipeline options; reports unknown keys.
    private func family<T>(
        _ parent: ConfigSection, _ family: ConfigFamily, _ body: (ConfigSection, PipelineOptions) -> T
    ) -> T? {
        guard parent.keys.contains(family.rawValue) else {
            _ = parent.node(family.rawValue)  // known key, merely absent
            return nil
        }
        let s = parent.section(family.rawValue)
        var options = family.defaultOptions
        options.retry = delivery.retry
        options.poolSize = s.int("pool_size", default: options.poolSize, range: 1...1024)
        options.maxInFlight = s.int("max_in_flight", default: options.maxInFlight, range: 1...100_000)
        options.batchSize = s.int("batch_size", default: options.batchSize, range: 1...10_000)
        options.idleTimeout = s.duration("idle_timeout", default: options.idleTimeout)
        options.linger = s.duration(
            "linger", default: options.linger, atMost: PipelineOptions.maxLinger,
            why: "how long a batch that is not full waits for more records while others are in flight")
        options.ordering = s.choice("ordering", default: options.ordering)
        if s.keys.contains("retry") {
            options.retry = ConfigLoader.readRetry(s.section("retry"), base: delivery.retry)
        } else {
            _ = s.node("retry")
        }
        let result = body(s, options)
        s.finish()
        return result
    }

    private func readTLS(_ s: ConfigSection) -> TLSConfig {
        var unused = true
        return readTLS(s, enabled: &unused, hasEnabled: false)
    }

    /// `hasEnabled`: the section also takes `enabled` (Kafka, where TLS is not in the address).
    private func readTLS(_ s: ConfigSection, enabled: inout Bool, hasEnabled: Bool = true) -> TLSConfig {
        var t = TLSConfig()
        var on = enabled
        defer { enabled = on }
        s.readingAll { s in
            if hasEnabled { on = s.bool("enabled", default: on) }
            t.caFile = paths.absolute(s.string("ca_file", default: t.caFile))
            t.certificateFile = paths.absolute(s.string("certificate_file", default: t.certificateFile))
            t.keyFile = paths.absolute(s.string("key_file", default: t.keyFile))
            t.verify = s.bool("verify", default: t.verify)
        }
        return t
    }
}

extension Character {
    var isASCIIDigit: Bool { isASCII && isNumber }
}
