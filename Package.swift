// swift-tools-version:6.0
import PackageDescription

// Each library target is one part of the data path and imports only what sits below it
// (docs/ARCHITECTURE.md draws the graph). Keep it that way when adding targets.
let package = Package(
    name: "sinkd",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "sinkd", targets: ["sinkd"])
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.5.0"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.0.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.80.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.6.0"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.5.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.1.0"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.30.0"),
        .package(url: "https://github.com/apple/swift-crypto.git", "3.12.0"..<"5.0.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.27.0"),
        .package(url: "https://github.com/vapor/postgres-nio.git", from: "1.21.0"),
    ],
    targets: [
        // Records, configuration, sink addresses: pure values, no I/O beyond reading the config.
        .target(
            name: "SinkdCore",
            dependencies: ["CCRC32C", .product(name: "Yams", package: "Yams")]
        ),
        // CRC-32C with the CPU's instruction where there is one (x86-64 SSE4.2).
        .target(name: "CCRC32C"),
        // The write-ahead log: segments, group commit, recovery, delivery progress, sink readers.
        .target(
            name: "SinkdWAL",
            dependencies: [
                "SinkdCore", "CCRC32C", .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
            ]
        ),
        // The Unix-socket ingest protocol: framing, request parsing, acknowledgement after durability.
        .target(
            name: "SinkdIngest",
            dependencies: [
                "SinkdCore",
                "SinkdWAL",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        // The delivery engine: the sink interface, per-sink pipelines, retry, dead letters.
        .target(
            name: "SinkdDelivery",
            dependencies: [
                "SinkdCore",
                "SinkdWAL",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        // file:NAME, appending to NDJSON files.
        .target(
            name: "SinkdFileSink",
            dependencies: ["SinkdCore", "SinkdWAL", "SinkdDelivery", .product(name: "NIOPosix", package: "swift-nio")]
        ),
        // The control socket: status, dead-letter replay and purge (later: reload).
        .target(
            name: "SinkdControl",
            dependencies: [
                "SinkdCore", "SinkdWAL", "SinkdIngest", "SinkdDelivery",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        // http:NAME, POSTs with async-http-client.
        .target(
            name: "SinkdHTTPSink",
            dependencies: [
                "SinkdCore", "SinkdDelivery",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),
        // redis:STREAM, XADD over a small RESP client on SwiftNIO.
        .target(
            name: "SinkdRedisSink",
            dependencies: [
                "SinkdCore", "SinkdDelivery",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ]
        ),
        // libsystemd (sd_notify, sd_listen_fds_with_names, sd_journal_sendv) from Debian's libsystemd-dev.
        .systemLibrary(
            name: "CSystemd",
            pkgConfig: "libsystemd",
            providers: [.apt(["libsystemd-dev"])]
        ),
        // sqs:NAME, the AWS JSON protocol signed with SigV4, on async-http-client and swift-crypto.
        .target(
            name: "SinkdSQSSink",
            dependencies: [
                "SinkdCore", "SinkdDelivery",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),
        // Client TLS contexts from a family's `tls` section (swift-nio-ssl), for the NATS and AMQP sinks.
        .target(
            name: "SinkdTLS",
            dependencies: [
                "SinkdCore", "SinkdDelivery", .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ]
        ),
        // nats:, jsm:, nats_stream: over a NATS client on SwiftNIO (TLS with swift-nio-ssl, NKeys with swift-crypto).
        .target(
            name: "SinkdNATSSink",
            dependencies: [
                "SinkdCore", "SinkdDelivery", "SinkdTLS", "CZlib",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOTLS", package: "swift-nio"),
            ]
        ),
        // amqp_queue:, amqp_exchange: over an AMQP 0-9-1 client on SwiftNIO, with publisher confirms.
        .target(
            name: "SinkdAMQPSink",
            dependencies: [
                "SinkdCore", "SinkdDelivery", "SinkdTLS",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ]
        ),
        // conductor, conductor:NAME: into Conductor's PostgreSQL queue tables with postgres-nio.
        .target(
            name: "SinkdConductorSink",
            dependencies: [
                "SinkdCore", "SinkdDelivery", "SinkdTLS",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
            ]
        ),
        // systemd integration through libsystemd: sd_notify, the watchdog, socket activation, the journal.
        .target(
            name: "SinkdSystemd",
            dependencies: [
                "CSystemd",
                "SinkdCore",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        // The command-line interface: every subcommand, as a library so tests can drive it.
        .target(
            name: "SinkdCLI",
            dependencies: [
                "SinkdCore",
                "SinkdWAL",
                "SinkdIngest",
                "SinkdDelivery",
                "SinkdFileSink",
                "SinkdRedisSink",
                "SinkdHTTPSink",
                "SinkdControl",
                "SinkdSystemd",
                "SinkdSQSSink",
                "SinkdNATSSink",
                "SinkdAMQPSink",
                "SinkdConductorSink",
                "SinkdKafkaSink",
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // The test servers (redis, nats, rabbitmq, postgresql, tansu, moto) as the tests and
        // sinkd-bench start them, loopback ports, test certificates, python3 (the independent
        // peers). Linked by no product.
        .target(
            name: "SinkdTestServers",
            dependencies: [.product(name: "NIOConcurrencyHelpers", package: "swift-nio")]
        ),
        // What the sink families' integration tests share: the delivery engine over a real WAL.
        .target(
            name: "SinkdTestSupport",
            dependencies: [
                "SinkdCore", "SinkdWAL", "SinkdDelivery",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        .executableTarget(
            name: "sinkd",
            dependencies: ["SinkdCLI", .product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),
        // The benchmarks (README, Performance): not part of the operator's binary, not installed.
        .executableTarget(
            name: "sinkd-bench",
            dependencies: [
                "SinkdTestServers",
                "SinkdCore", "SinkdWAL", "SinkdIngest", "SinkdNATSSink", "SinkdSQSSink", "SinkdTestSupport",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),
        // Fuzzing: what every untrusted byte reaches (FuzzTarget), and the libFuzzer binary
        // scripts/fuzz builds from it; the test suite replays the committed corpora.
        .target(
            name: "SinkdFuzzTargets",
            dependencies: ["SinkdCore", "SinkdIngest", "SinkdWAL", "SinkdAMQPSink", "SinkdNATSSink", "SinkdDelivery"]),
        .systemLibrary(name: "CFuzzDriver"),
        // zlib (apt zlib1g-dev), for Kafka's gzip compression.
        .systemLibrary(name: "CZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),
        .executableTarget(name: "sinkd-fuzz", dependencies: ["SinkdFuzzTargets", "CFuzzDriver"]),
        // kafka: the wire codecs (record batch v2, ApiVersions, Metadata, InitProducerId, Produce),
        // the partitioner and the idempotent producer's bookkeeping, I/O-free; the connection and
        // the family on NIO (TLS with swift-nio-ssl, SCRAM with swift-crypto, gzip with zlib; issue 21).
        .target(
            name: "SinkdKafkaSink",
            dependencies: [
                "SinkdCore", "SinkdDelivery", "SinkdTLS", "CZlib",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .testTarget(
            name: "SinkdKafkaSinkTests",
            dependencies: [
                "SinkdTestServers",
                "SinkdKafkaSink", "SinkdCore", "SinkdDelivery", "SinkdIngest", "SinkdTestSupport",
                .product(name: "Logging", package: "swift-log"),
            ],
            exclude: ["Fixtures"]
        ),
        .testTarget(name: "SinkdCoreTests", dependencies: ["SinkdCore"]),
        .testTarget(name: "SinkdWALTests", dependencies: ["SinkdWAL", "SinkdTestSupport"]),
        .testTarget(name: "SinkdFuzzTargetsTests", dependencies: ["SinkdFuzzTargets", "SinkdCore"]),
        .testTarget(
            name: "SinkdHTTPSinkTests",
            dependencies: [
                "SinkdTestServers",
                "SinkdHTTPSink", "SinkdDelivery", "SinkdCore", "SinkdTestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ]
        ),
        .testTarget(
            name: "SinkdRedisSinkTests",
            dependencies: [
                "SinkdTestServers",
                .product(name: "NIOTestUtils", package: "swift-nio"),
                "SinkdRedisSink", "SinkdDelivery", "SinkdCore", "SinkdIngest", "SinkdTestSupport",
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ]
        ),
        .testTarget(
            name: "SinkdDeliveryTests",
            dependencies: [
                "SinkdTestServers",
                "SinkdDelivery", "SinkdFileSink", "SinkdWAL", "SinkdCore", "SinkdTestSupport",
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
            ]
        ),
        .testTarget(
            name: "SinkdIngestTests",
            dependencies: [
                "SinkdTestServers",
                .product(name: "NIOTestUtils", package: "swift-nio"),
                "SinkdIngest", "SinkdWAL", "SinkdCore", "SinkdTestSupport",
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
            ]
        ),
        .testTarget(name: "SinkdSystemdTests", dependencies: ["SinkdSystemd"]),
        .testTarget(
            name: "SinkdSQSSinkTests",
            dependencies: [
                "SinkdTestServers",
                "SinkdSQSSink", "SinkdDelivery", "SinkdCore", "SinkdWAL", "SinkdIngest", "SinkdTestSupport",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            exclude: ["Fixtures"]
        ),
        .testTarget(
            name: "SinkdNATSSinkTests",
            dependencies: [
                "SinkdTestServers",
                .product(name: "NIOTestUtils", package: "swift-nio"),
                "SinkdNATSSink", "SinkdDelivery", "SinkdCore", "SinkdWAL", "SinkdIngest", "SinkdTestSupport",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            exclude: ["Fixtures"]
        ),
        .testTarget(
            name: "SinkdAMQPSinkTests",
            dependencies: [
                "SinkdTestServers",
                .product(name: "NIOTestUtils", package: "swift-nio"),
                "SinkdAMQPSink", "SinkdDelivery", "SinkdCore", "SinkdIngest", "SinkdTestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            exclude: ["Fixtures"]
        ),
        .testTarget(
            name: "SinkdConductorSinkTests",
            dependencies: [
                "SinkdTestServers",
                "SinkdConductorSink", "SinkdDelivery", "SinkdCore", "SinkdIngest", "SinkdTestSupport",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .testTarget(
            name: "SinkdCLITests",
            dependencies: [
                "SinkdTestServers",
                "SinkdCLI", "SinkdControl", "SinkdSystemd", "SinkdIngest", "SinkdWAL", "SinkdDelivery", "SinkdCore",
                "SinkdTestSupport", "sinkd",
            ]),
    ],
    swiftLanguageModes: [.v6]
)
