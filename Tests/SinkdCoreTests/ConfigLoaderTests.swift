import Foundation
import Testing
@testable import SinkdCore

@Suite struct ConfigLoaderTests {
    static func load(_ yaml: String, env: [String: String] = [:]) throws(ConfigErrors) -> SinkdConfig {
        try ConfigLoader.parse(yaml: yaml, file: "sinkd.yaml", environment: env, workingDirectory: "/srv")
    }

    static func errors(_ yaml: String, env: [String: String] = [:]) -> [String] {
        do {
            _ = try load(yaml, env: env)
            return []
        } catch {
            return error.errors.map(\.description)
        }
    }

    @Test func emptyFileGivesDefaults() throws {
        var expected = SinkdConfig()
        expected.sourcePath = "sinkd.yaml"
        #expect(try Self.load("") == expected)
        #expect(try Self.load("# only a comment\n") == expected)
    }

    @Test func shippedConfigsAreValid() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        for name in ["sinkd.yaml", "local.yaml"] {
            let path = root.appendingPathComponent("Config/\(name)").path
            let config = try ConfigLoader.load(path: path, environment: [:])
            #expect(config.sinks.file != nil, "\(name) configures the file sink")
        }
    }

    @Test func everyKeyIsRead() throws {
        let yaml = """
            ingest:
              socket: run/in.sock
              socket_mode: "0600"
              max_record_bytes: 2MiB
              max_connections: 10
              idle_timeout: 90s
              allowed_uids: [0, 1000]
              allowed_gids: [27]
            control:
              socket: /run/c.sock
            wal:
              directory: /data/wal
              segment_size: 8MiB
              max_size: 1GiB
              fsync: interval
              fsync_interval: 50ms
              when_full: reject
            delivery:
              dedupe_window: 1h
              dedupe_max_entries: 5000
              shutdown_timeout: 3s
              max_sinks: 7
              retry: {initial_backoff: 1s, max_backoff: 30s, multiplier: 1.5, max_attempts: 9, max_age: 24h}
              dead_letter: {directory: dlq}
            log: {level: debug, format: json}
            metrics: {listen: "127.0.0.1:9464"}
            sinks:
              file: {directory: /out, batch_size: 64}
              http:
                endpoints:
                  audit: {url: "https://audit.example/e", headers: {X-Team: sre}, timeout: 2s}
                max_in_flight: 3
              redis: {url: "redis://:pw@127.0.0.1:6380/2", maxlen: 1000, pool_size: 2}
              sqs:
                region: eu-west-1
                endpoint: "http://127.0.0.1:5000"
                account_id: "123456789012"
                access_key_id: AKID
                secret_access_key: SECRET
                session_token: TOKEN
                profile: prod
                sts_endpoint: "https://sts.eu-west-1.amazonaws.com/"
                max_batch_bytes: 1MiB
                max_message_bytes: 512KiB
                create_missing_queues: true
                fifo_group_id: "{{correlationId}}"
                message_attributes: false
                ordering: strict
              amqp:
                urls: ["amqp://u:p@h1:5672/v", "amqps://u:p@h2:5671/v"]
                heartbeat: 10s
                queue_type: quorum
                content_type: text/plain
                content_encoding: identity
                declare: false
                connections: 2
                tls: {ca_file: /ca.pem, certificate_file: c.pem, key_file: /k.pem, verify: false}
                retry: {max_attempts: 3}
              nats:
                servers: ["nats://n1:4222", "n2:4222"]
                user: u
                password: p
                token: t
                nkey_seed: SUAX
                credentials_file: /n.creds
                jsm: {subject_prefix: "conductor_jsm_notify_test_", create_stream: true}
                idle_timeout: 1m
              conductor:
                postgres: {url: "postgresql://c@db/conductor"}
              kafka:
                bootstrap_servers: ["k1:9092", "[::1]:9093"]
                client_id: conductor-events
                headers: true
                create_topics: true
                request_timeout: 5s
                batch_size: 1000
                compression: gzip
                metadata_max_age: 1m
                linger: 20ms
                sasl: {mechanism: SCRAM-SHA-256, username: sinkd, password: pw}
                tls: {ca_file: /etc/ssl/kafka-ca.pem}
            """
        let c = try Self.load(yaml)
        #expect(c.ingest.socket == "/srv/run/in.sock")
        #expect(c.ingest.socketMode == 0o600)
        #expect(c.ingest.maxRecordBytes == 2 << 20)
        #expect(c.ingest.maxConnections == 10)
        #expect(c.ingest.idleTimeout == .seconds(90))
        #expect(c.ingest.allowedUIDs == [0, 1000])
        #expect(c.ingest.allowedGIDs == [27])
        #expect(c.control.socket == "/run/c.sock")
        #expect(c.wal.directory == "/data/wal")
        #expect(c.wal.segmentSize == 8 << 20)
        #expect(c.wal.maxSize == 1 << 30)
        #expect(c.wal.fsync == .interval)
        #expect(c.wal.fsyncInterval == .milliseconds(50))
        #expect(c.wal.whenFull == .reject)
        #expect(c.delivery.dedupeWindow == .seconds(3600))
        #expect(c.delivery.dedupeMaxEntries == 5000)
        #expect(c.delivery.shutdownTimeout == .seconds(3))
        #expect(c.delivery.maxSinks == 7)
        #expect(c.delivery.retry.initialBackoff == .seconds(1))
        #expect(c.delivery.retry.maxBackoff == .seconds(30))
        #expect(c.delivery.retry.multiplier == 1.5)
        #expect(c.delivery.retry.maxAttempts == 9)
        #expect(c.delivery.retry.maxAge == .seconds(86_400))
        #expect(c.delivery.deadLetterDirectory == "/srv/dlq")
        #expect(c.log.level == .debug)
        #expect(c.log.format == .json)
        #expect(c.metrics.listen == "127.0.0.1:9464")
        #expect(c.sinks.file?.directory == "/out")
        #expect(c.sinks.file?.options.batchSize == 64)
        #expect(c.sinks.http?.endpoints["audit"]?.url == "https://audit.example/e")
        #expect(c.sinks.http?.endpoints["audit"]?.headers == ["X-Team": "sre"])
        #expect(c.sinks.http?.endpoints["audit"]?.timeout == .seconds(2))
        #expect(c.sinks.http?.options.maxInFlight == 3)
        #expect(c.sinks.redis?.url == "redis://:pw@127.0.0.1:6380/2")
        #expect(c.sinks.redis?.maxlen == 1000)
        #expect(c.sinks.redis?.options.poolSize == 2)
        let sqs = try #require(c.sinks.sqs)
        #expect(sqs.region == "eu-west-1")
        #expect(sqs.endpoint == "http://127.0.0.1:5000")
        #expect(sqs.accountID == "123456789012")
        #expect(sqs.accessKeyID == "AKID")
        #expect(sqs.secretAccessKey == "SECRET")
        #expect(sqs.sessionToken == "TOKEN")
        #expect(sqs.profile == "prod")
        #expect(sqs.stsEndpoint == "https://sts.eu-west-1.amazonaws.com/")
        #expect(sqs.maxBatchBytes == 1 << 20)
        #expect(sqs.maxMessageBytes == 512 << 10)
        #expect(sqs.createMissingQueues)
        #expect(sqs.fifoGroupID == "{{correlationId}}")
        #expect(sqs.messageAttributes == false)
        #expect(sqs.options.ordering == .strict)
        let amqp = try #require(c.sinks.amqp)
        #expect(amqp.urls == ["amqp://u:p@h1:5672/v", "amqps://u:p@h2:5671/v"])
        #expect(amqp.heartbeat == .seconds(10))
        #expect(amqp.queueType == .quorum)
        #expect(amqp.contentType == "text/plain")
        #expect(amqp.contentEncoding == "identity")
        #expect(amqp.declare == false)
        #expect(amqp.connections == 2)
        #expect(
            amqp.tls == TLSConfig(caFile: "/ca.pem", certificateFile: "/srv/c.pem", keyFile: "/k.pem", verify: false))
        #expect(amqp.options.retry.maxAttempts == 3)
        #expect(
            amqp.options.retry.initialBackoff == .seconds(1), "a family's retry override starts from delivery.retry")
        #expect(amqp.options.poolSize == 2, "amqp's own default")
        let nats = try #require(c.sinks.nats)
        #expect(nats.servers == ["nats://n1:4222", "n2:4222"])
        #expect(nats.user == "u")
        #expect(nats.password == "p")
        #expect(nats.token == "t")
        #expect(nats.nkeySeed == "SUAX")
        #expect(nats.credentialsFile == "/n.creds")
        #expect(nats.jsmSubjectPrefix == "conductor_jsm_notify_test_")
        #expect(nats.jsmCreateStream)
        #expect(nats.options.idleTimeout == .seconds(60))
        #expect(nats.options.retry == c.delivery.retry)
        #expect(c.sinks.conductor?.postgresURL == "postgresql://c@db/conductor")
        let kafka = try #require(c.sinks.kafka)
        #expect(kafka.bootstrapServers == ["k1:9092", "[::1]:9093"])
        #expect(KafkaSinkConfig.hostPort(kafka.bootstrapServers[1])! == ("::1", 9093))
        #expect(kafka.clientID == "conductor-events")
        #expect(kafka.headers && kafka.createTopics)
        #expect(kafka.requestTimeout == .seconds(5))
        #expect(kafka.options.batchSize == 1000)
        #expect(kafka.options.maxInFlight == 4, "kafka's own default")
        #expect(kafka.sasl == KafkaSASLConfig(mechanism: .scramSHA256, username: "sinkd", password: "pw"))
        #expect(kafka.tls == TLSConfig(caFile: "/etc/ssl/kafka-ca.pem"), "a tls section turns TLS on")
        #expect(kafka.compression == .gzip)
        #expect(kafka.options.linger == .milliseconds(20))
        #expect(kafka.metadataMaxAge == .seconds(60))
        #expect(c.sinks.configuredFamilies == Set(ConfigFamily.allCases))
    }

    @Test func familyWithEmptySectionIsConfiguredWithDefaults() throws {
        let c = try Self.load("sinks:\n  redis:\n  nats: {}\n")
        #expect(c.sinks.configuredFamilies == [.redis, .nats])
        #expect(c.sinks.redis == RedisSinkConfig())
    }

    struct ErrorCase: Sendable, CustomTestStringConvertible {
        var yaml: String
        var messages: [String]
        var testDescription: String { messages.first ?? yaml }
    }

    static let errorCases: [ErrorCase] = [
        ErrorCase(
            yaml: "delivery:\n  retry:\n    max_backoff: thirty\n",
            messages: [#"sinkd.yaml:3:18: delivery.retry.max_backoff: expected a duration like "30s", got "thirty""#]),
        ErrorCase(
            yaml: "wal:\n  segment_size: lots\n",
            messages: [
                #"sinkd.yaml:2:17: wal.segment_size: expected a size like "64MiB" or a number of bytes, got "lots""#
            ]),
        ErrorCase(
            yaml: "wal:\n  fsync: sometimes\n",
            messages: [#"sinkd.yaml:2:10: wal.fsync: expected one of always, interval, never, got "sometimes""#]),
        ErrorCase(
            yaml: "ingest:\n  sockett: /x\n",
            messages: [
                "sinkd.yaml:2:3: ingest.sockett: unknown key 'sockett' (known keys here: allowed_gids, allowed_uids, idle_timeout, max_connections, max_record_bytes, max_unanswered_bytes, socket, socket_mode)"
            ]),
        ErrorCase(
            yaml: "extra: 1\n",
            messages: [
                "sinkd.yaml:1:1: extra: unknown key 'extra' (known keys here: control, delivery, ingest, log, metrics, sinks, wal)"
            ]),
        ErrorCase(
            yaml: "ingest: [1, 2]\n",
            messages: ["sinkd.yaml:1:9: ingest: expected a mapping of keys to values, got a list"]),
        ErrorCase(
            yaml: "ingest:\n  max_connections: many\n",
            messages: [#"sinkd.yaml:2:20: ingest.max_connections: expected an integer, got "many""#]),
        ErrorCase(
            yaml: "ingest:\n  max_connections: 0\n",
            messages: ["sinkd.yaml:2:20: ingest.max_connections: must be between 1 and 65536, got 0"]),
        ErrorCase(
            yaml: "ingest:\n  socket_mode: \"999\"\n",
            messages: [#"sinkd.yaml:2:16: ingest.socket_mode: expected an octal file mode like "0660", got "999""#]),
        ErrorCase(
            yaml: "ingest:\n  allowed_uids: [0, root]\n",
            messages: [#"sinkd.yaml:2:21: ingest.allowed_uids[1]: expected a numeric user id, got "root""#]),
        ErrorCase(
            yaml: "ingest:\n  allowed_uids: 0\n",
            messages: [#"sinkd.yaml:2:17: ingest.allowed_uids: expected a list of a numeric user id, got "0""#]),
        ErrorCase(
            yaml: "log:\n  level: loud\n  format: xml\n",
            messages: [
                #"sinkd.yaml:2:10: log.level: expected one of trace, debug, info, notice, warning, error, critical, got "loud""#,
                #"sinkd.yaml:3:11: log.format: expected one of auto, journal, logfmt, json, got "xml""#,
            ]),
        ErrorCase(
            yaml: "metrics:\n  listen: nowhere\n",
            messages: [#"sinkd.yaml:2:11: metrics.listen: expected "HOST:PORT" or "", got "nowhere""#]),
        ErrorCase(
            yaml: "wal:\n  fsync: interval\n  fsync_interval: 0s\n",
            messages: ["sinkd.yaml:3:19: wal.fsync_interval: must be greater than 0s when wal.fsync is interval"]),
        ErrorCase(
            yaml: "delivery:\n  retry: {initial_backoff: 10s, max_backoff: 1s}\n",
            messages: ["sinkd.yaml:2:46: delivery.retry.max_backoff: must be at least initial_backoff (10s), got 1s"]),
        ErrorCase(
            yaml: "delivery:\n  retry: {multiplier: 0.5}\n",
            messages: ["sinkd.yaml:2:23: delivery.retry.multiplier: must be between 1.0 and 100.0, got 0.5"]),
        ErrorCase(
            yaml: "wal:\n  segment_size: 1MiB\n",
            messages: [
                "sinkd.yaml:2:17: wal.segment_size: must be at least twice ingest.max_record_bytes (2MiB), got 1MiB"
            ]),
        ErrorCase(
            yaml: "wal:\n  max_size: 64MiB\n",
            messages: ["sinkd.yaml:2:13: wal.max_size: must be at least twice wal.segment_size (128MiB), got 64MiB"]),
        ErrorCase(
            yaml: "ingest: {socket: /s}\ncontrol: {socket: /s}\n",
            messages: ["sinkd.yaml:2:19: control.socket: must differ from ingest.socket (/s)"]),
        ErrorCase(
            yaml: "sinks:\n  redis: {reply_timeout: 0s}\n",
            messages: ["sinkd.yaml:2:26: sinks.redis.reply_timeout: must be between 100ms and 10m, got 0s"]),
        ErrorCase(
            yaml: "sinks:\n  kafka: {bootstrap_servers: [\"b:9092\"], request_timeout: 60s, delivery_timeout: 30s}\n",
            messages: [
                "sinkd.yaml:2:82: sinks.kafka.delivery_timeout: must be at least request_timeout (1m) and at most 1h, got 30s"
            ]),
        ErrorCase(
            yaml: "sinks:\n  kafka: {}\n",
            messages: [
                "sinkd.yaml:2:10: sinks.kafka.bootstrap_servers: is required: at least one HOST:PORT of a Kafka broker"
            ]),
        ErrorCase(
            yaml: "sinks:\n  kafka: {bootstrap_servers: [\"broker\"], request_timeout: 1ms}\n",
            messages: [
                #"sinkd.yaml:2:31: sinks.kafka.bootstrap_servers[0]: expected a HOST:PORT broker address, got "broker""#,
                "sinkd.yaml:2:59: sinks.kafka.request_timeout: must be between 100ms and 10m, got 1ms",
            ]),
        ErrorCase(
            yaml: "sinks:\n  kafka: {bootstrap_servers: [\"b:9092\"], metadata_max_age: 1ms, compression: lz4}\n",
            messages: [
                "sinkd.yaml:2:60: sinks.kafka.metadata_max_age: must be between 100ms and 24h, got 1ms",
                #"sinkd.yaml:2:78: sinks.kafka.compression: expected one of none, gzip, got "lz4""#,
            ]),
        ErrorCase(
            yaml: "sinks:\n  kafka: {bootstrap_servers: [\"b:9092\"], sasl: {mechanism: GSSAPI}}\n",
            messages: [
                "sinkd.yaml:2:48: sinks.kafka.sasl.username: is required with sasl: the user sinkd authenticates as",
                "sinkd.yaml:2:48: sinks.kafka.sasl.password: is required with sasl: that user's password",
                #"sinkd.yaml:2:60: sinks.kafka.sasl.mechanism: expected one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, got "GSSAPI""#,
            ]),
        ErrorCase(
            yaml: "sinks:\n  kafka: {bootstrap_servers: [\"b:9092\"], tls: {verify: maybe, cafile: x}}\n",
            messages: [
                #"sinkd.yaml:2:56: sinks.kafka.tls.verify: expected true or false, got "maybe""#,
                "sinkd.yaml:2:63: sinks.kafka.tls.cafile: unknown key 'cafile' (known keys here: ca_file, certificate_file, enabled, key_file, verify)",
            ]),
        ErrorCase(
            yaml: "sinks:\n  rabbit: {}\n",
            messages: [
                "sinkd.yaml:2:3: sinks.rabbit: unknown key 'rabbit' (known keys here: amqp, conductor, file, http, kafka, nats, redis, sqs)"
            ]),
        ErrorCase(
            yaml: "sinks:\n  file: {pool_size: 0, ordering: random}\n",
            messages: [
                "sinkd.yaml:2:21: sinks.file.pool_size: must be between 1 and 1024, got 0",
                #"sinkd.yaml:2:34: sinks.file.ordering: expected one of relaxed, strict, got "random""#,
            ]),
        ErrorCase(
            yaml: "sinks:\n  sqs: {sts_endpoint: sts.amazonaws.com}\n",
            messages: [
                #"sinkd.yaml:2:23: sinks.sqs.sts_endpoint: expected an http:// or https:// URL, or "", got "sts.amazonaws.com""#
            ]),
        ErrorCase(
            yaml: "sinks:\n  amqp: {urls: []}\n",
            messages: ["sinkd.yaml:2:16: sinks.amqp.urls: needs at least one broker URL"]),
        ErrorCase(
            yaml: "sinks:\n  amqp: {urls: [\"http://x\"]}\n",
            messages: [
                #"sinkd.yaml:2:17: sinks.amqp.urls[0]: expected an amqp:// or amqps:// URL with a host and a port of 1-65535, got "http://x""#
            ]),
        ErrorCase(
            yaml: "sinks:\n  http: {endpoints: {a: {timeout: 1s}}}\n",
            messages: [
                "sinkd.yaml:2:25: sinks.http.endpoints.a.url: is required: the URL records for http:a are POSTed to"
            ]),
        ErrorCase(
            yaml: "sinks:\n  sqs: {max_batch_bytes: 2MiB}\n",
            messages: ["sinkd.yaml:2:26: sinks.sqs.max_batch_bytes: must be between 1024 and 1048576, got 2097152"]),
        ErrorCase(
            yaml: "sinks:\n  redis: {url: \"http://r\"}\n",
            messages: [
                #"sinkd.yaml:2:16: sinks.redis.url: expected a redis:// URL, got "http://r": it must start with redis://"#
            ]),
        ErrorCase(
            yaml: "wal:\n  fsync: [always\n",
            messages: ["sinkd.yaml:3:1: YAML syntax error: did not find expected ',' or ']'"]),
        ErrorCase(
            yaml: "wal: {fsync: always, fsync: never}\n",
            messages: ["sinkd.yaml: YAML error: key(s) fsync appear more than once in one mapping"]),
        ErrorCase(
            yaml: "sinks:\n  redis: {url: \"${env:REDIS_URL}\"}\n",
            messages: [
                "sinkd.yaml:2:16: sinks.redis.url: secret reference ${env:REDIS_URL}: environment variable REDIS_URL is not set"
            ]),
        ErrorCase(
            yaml: "sinks:\n  redis: {url: \"${vault:x}\"}\n",
            messages: [
                "sinkd.yaml:2:16: sinks.redis.url: secret reference ${vault:x}: unknown kind 'vault' (known: env, file, credential)"
            ]),
        ErrorCase(
            yaml: "sinks:\n  sqs: {secret_access_key: \"${credential:aws}\"}\n",
            messages: [
                "sinkd.yaml:2:28: sinks.sqs.secret_access_key: secret reference ${credential:aws}: CREDENTIALS_DIRECTORY is not set (add LoadCredential=aws:/path/to/secret to the unit, or use ${file:...} outside systemd)"
            ]),
        ErrorCase(
            yaml: "sinks:\n  sqs: {secret_access_key: \"${file:relative}\"}\n",
            messages: [
                "sinkd.yaml:2:28: sinks.sqs.secret_access_key: secret reference ${file:relative}: the file path must be absolute"
            ]),
        ErrorCase(
            yaml: "sinks:\n  sqs: {secret_access_key: \"${env:K\"}\n",
            messages: [
                "sinkd.yaml:2:28: sinks.sqs.secret_access_key: unterminated secret reference '${env:K': expected '}' (write $${ for a literal ${)"
            ]),
    ]

    @Test(arguments: errorCases)
    func reportsErrors(_ c: ErrorCase) {
        #expect(Self.errors(c.yaml) == c.messages)
    }

    @Test func reportsEveryErrorAtOnceInFileOrder() {
        let yaml = "wal:\n  fsync: sometimes\nlog:\n  level: loud\ningest:\n  bogus: 1\n"
        let errors = Self.errors(yaml)
        #expect(errors.count == 3)
        #expect(errors.map { $0.split(separator: ":")[1] } == ["2", "4", "6"])
    }

    @Test func secretValuesNeverAppearInErrors() {
        let env = ["MODE": "s3cr3t-value"]
        let errors = Self.errors("wal:\n  fsync: \"${env:MODE}\"\n", env: env)
        #expect(
            errors == [
                "sinkd.yaml:2:10: wal.fsync: expected one of always, interval, never, got the value of ${env:MODE}"
            ])
        #expect(!errors.joined().contains("s3cr3t"))
    }

    @Test func resolvesSecretReferences() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sinkd-secrets-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        try "from-file\n".write(to: dir.appendingPathComponent("plain"), atomically: true, encoding: .utf8)
        try "from-credential".write(to: dir.appendingPathComponent("aws-secret"), atomically: true, encoding: .utf8)
        let yaml = """
            sinks:
              sqs:
                access_key_id: "${env:AKID}"
                secret_access_key: "${credential:aws-secret}"
                session_token: "${file:\(dir.path)/plain}"
              amqp:
                urls: ["amqp://sinkd:${env:PW}@rabbit:5672/%2f"]
              http:
                endpoints:
                  e: {url: "http://x/", headers: {Authorization: "Bearer ${env:PW}", Literal: "$${env:PW}"}}
            """
        let c = try Self.load(yaml, env: ["AKID": "AKIA123", "PW": "hunter2", "CREDENTIALS_DIRECTORY": dir.path])
        #expect(c.sinks.sqs?.accessKeyID == "AKIA123")
        #expect(c.sinks.sqs?.secretAccessKey == "from-credential")
        #expect(c.sinks.sqs?.sessionToken == "from-file")
        #expect(c.sinks.amqp?.urls == ["amqp://sinkd:hunter2@rabbit:5672/%2f"])
        #expect(c.sinks.http?.endpoints["e"]?.headers == ["Authorization": "Bearer hunter2", "Literal": "${env:PW}"])
        #expect(!ConfigSummary.render(c).contains("hunter2"))

        let missing = Self.errors(
            "sinks:\n  sqs: {secret_access_key: \"${credential:nope}\"}\n", env: ["CREDENTIALS_DIRECTORY": dir.path])
        #expect(
            missing == [
                "sinkd.yaml:2:28: sinks.sqs.secret_access_key: secret reference ${credential:nope}: file \(dir.path)/nope does not exist"
            ])
    }

    /// Issue 33: a 1 GiB secret file was read whole (check-config 2.1 GB, accepted; a reload left
    /// the daemon at 2.1 GB); an 8 GiB sparse one took 16.8 GB. A secret is at most 64 KiB, read
    /// with that bound; a directory, FIFO or device is refused at once.
    @Test func secretFilesAreSmallRegularFilesReadWithABound() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sinkd-secrets-\(UUID().uuidString)")
            .path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let huge = dir + "/huge"
        #expect(FileManager.default.createFile(atPath: huge, contents: nil))
        #expect(truncate(huge, 8 << 30) == 0, "an 8 GiB sparse file")
        try String(repeating: "k", count: 64 << 10).write(toFile: dir + "/limit", atomically: true, encoding: .utf8)
        try String(repeating: "k", count: (64 << 10) + 1).write(
            toFile: dir + "/over", atomically: true, encoding: .utf8)
        #expect(mkfifo(dir + "/fifo", 0o600) == 0)
        let resolver = SecretResolver(environment: [:])
        #expect(
            resolver.resolve("${file:\(huge)}")
                == .failure(
                    .init(
                        message:
                            "secret reference ${file:\(huge)}: file \(huge) holds 8589934592 bytes; a secret is at most 64 KiB (is this the right file?)"
                    )))
        #expect(try resolver.resolve("${file:\(dir)/limit}").get().value.count == 64 << 10, "64 KiB exactly is allowed")
        #expect(
            resolver.resolve("${file:\(dir)/over}")
                == .failure(
                    .init(
                        message:
                            "secret reference ${file:\(dir)/over}: file \(dir)/over holds 65537 bytes; a secret is at most 64 KiB (is this the right file?)"
                    )))
        #expect(
            resolver.resolve("${file:\(dir)/fifo}")
                == .failure(.init(message: "secret reference ${file:\(dir)/fifo}: \(dir)/fifo is not a regular file")))
        #expect(
            resolver.resolve("${file:\(dir)}")
                == .failure(.init(message: "secret reference ${file:\(dir)}: \(dir) is not a regular file")))
        #expect(
            resolver.resolve("${file:/dev/zero}")
                == .failure(.init(message: "secret reference ${file:/dev/zero}: /dev/zero is not a regular file")))
        let errors = Self.errors("sinks:\n  sqs: {secret_access_key: \"${file:\(huge)}\"}\n")
        #expect(
            errors == [
                "sinkd.yaml:2:28: sinks.sqs.secret_access_key: secret reference ${file:\(huge)}: file \(huge) holds 8589934592 bytes; a secret is at most 64 KiB (is this the right file?)"
            ])
    }

    @Test func configPathPrecedence() {
        #expect(ConfigLoader.resolvePath(flag: "/a.yaml", environment: ["SINKD_CONFIG": "/b.yaml"]) == "/a.yaml")
        #expect(ConfigLoader.resolvePath(flag: nil, environment: ["SINKD_CONFIG": "/b.yaml"]) == "/b.yaml")
        #expect(ConfigLoader.resolvePath(flag: nil, environment: [:]) == "/etc/sinkd/sinkd.yaml")
    }

    @Test func missingFileIsOneClearError() {
        #expect(
            throws: ConfigErrors([
                ConfigError(
                    file: "/nonexistent/sinkd.yaml", keyPath: "",
                    message:
                        "the configuration file does not exist (pass --config PATH or set SINKD_CONFIG; Config/sinkd.yaml is a documented starting point)"
                )
            ])
        ) {
            try ConfigLoader.load(path: "/nonexistent/sinkd.yaml", environment: [:])
        }
    }
}

/// Issue 18, item 9: no number in a configuration can trap the loader (and so `check-config` or a
/// reload): every size and duration has a range, checked with a file:line:col error.
@Suite struct AbsurdNumberTests {
    static let sizes = [
        "ingest.max_record_bytes", "ingest.max_unanswered_bytes", "delivery.max_held_bytes_per_sink",
        "delivery.max_held_bytes", "wal.segment_size", "wal.max_size",
    ]
    static let durations = [
        "ingest.idle_timeout", "wal.fsync_interval", "delivery.dedupe_window", "delivery.shutdown_timeout",
        "delivery.retry.initial_backoff", "delivery.retry.max_backoff", "delivery.retry.max_age",
    ]
    static let hugeSizes = [
        "8000000000000000000", "9000000000000000000", "9223372036854775807", "9223372036854775808", "8000000TiB",
        "1125899906842625",
    ]
    static let hugeDurations = ["3000000h", "999999999999h", "9223372036854775807ms", "8784h1ms"]

    static func yaml(_ dotted: String, _ value: String) -> String {
        let parts = dotted.split(separator: ".")
        var text = ""
        for (depth, part) in parts.enumerated() {
            text +=
                String(repeating: "  ", count: depth) + part + ":"
                + (depth == parts.count - 1 ? " \"\(value)\"\n" : "\n")
        }
        return text
    }

    /// `linger`: every family takes it; Kafka's default is 5 ms (librdkafka's linger.ms in the
    /// benchmark, Kafka 4's Java default), the others' 0; more than 10 s is an error with a position.
    @Test func lingerHasFamilyDefaultsAndABound() throws {
        let c = try ConfigLoaderTests.load(
            "sinks: {file: {directory: /x}, kafka: {bootstrap_servers: [\"k:9092\"]}, redis: {url: \"redis://h\", linger: 2ms}}\n"
        )
        #expect(c.sinks.kafka?.options.linger == .milliseconds(5))
        #expect(c.sinks.file?.options.linger == .zero)
        #expect(c.sinks.redis?.options.linger == .milliseconds(2))
        let errors = ConfigLoaderTests.errors("sinks:\n  file:\n    directory: /x\n    linger: 11s\n")
        #expect(
            errors.contains {
                $0.hasPrefix("sinkd.yaml:4:") && $0.contains("sinks.file.linger") && $0.contains("at most 10s")
            }, "\(errors)")
    }

    @Test func hugeSizesAreErrorsWithAPosition() {
        for key in Self.sizes {
            for value in Self.hugeSizes {
                let errors = ConfigLoaderTests.errors(Self.yaml(key, value))
                #expect(
                    errors.contains { $0.contains(key) && $0.hasPrefix("sinkd.yaml:") },
                    "\(key): \(value) gave \(errors)")
            }
        }
    }

    @Test func hugeDurationsAreErrorsWithAPosition() {
        for key in Self.durations {
            for value in Self.hugeDurations {
                let errors = ConfigLoaderTests.errors(Self.yaml(key, value))
                #expect(
                    errors.contains { $0.contains(key) && $0.hasPrefix("sinkd.yaml:") },
                    "\(key): \(value) gave \(errors)")
            }
        }
    }

    @Test func theLargestAcceptedValuesLoadWithoutOverflow() throws {
        let config = try ConfigLoaderTests.load(
            """
            wal: {segment_size: 512TiB, max_size: 1024TiB, fsync: interval, fsync_interval: 8760h}
            delivery: {dedupe_window: 8760h, retry: {max_backoff: 8760h, max_age: 8760h}}
            """)
        #expect(config.wal.maxSize == 1 << 50)
    }
}
