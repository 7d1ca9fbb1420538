import Testing
@testable import SinkdCore

/// Server URLs are checked when the configuration is read, not at the first connect.
@Suite struct ServerURLTests {
    @Test func portsHostsAndSchemes() {
        let ok = [
            "redis://127.0.0.1:6379/0", "redis://:pw@h/0", "redis://u:p@ss@h:1/2", "amqp://g:g@[::1]:5672/%2f",
            "amqps://h",
            "nats://[fe80::1]", "http://h:65535/x?y=1",
        ]
        for url in ok {
            let scheme = String(url.prefix { $0 != ":" })
            #expect(ServerURL.problem(url, schemes: [scheme]) == nil, "\(url)")
        }
        #expect(
            ServerURL.problem("redis://h:99999/0", schemes: ["redis"])
                == "the port must be a number from 1 to 65535, got \"99999\"")
        #expect(
            ServerURL.problem("redis://h:0", schemes: ["redis"])
                == "the port must be a number from 1 to 65535, got \"0\"")
        #expect(
            ServerURL.problem("http://h:/", schemes: ["http"]) == "the port must be a number from 1 to 65535, got \"\"")
        #expect(ServerURL.problem("http://h:+80/", schemes: ["http"]) != nil)
        #expect(ServerURL.problem("http://h:8o/", schemes: ["http"]) != nil)
        #expect(ServerURL.problem("amqp://[::1/", schemes: ["amqp"]) == "the IPv6 address has no closing ']'")
        #expect(ServerURL.problem("amqp://[::1]x/", schemes: ["amqp"]) != nil)
        #expect(ServerURL.problem("amqp://g:g@:5672/", schemes: ["amqp", "amqps"]) == "it names no host")
        #expect(
            ServerURL.problem("redis://:pw@/0", schemes: ["redis"], hostRequired: false) == nil,
            "redis has a default host")
        #expect(ServerURL.problem("rediss://h", schemes: ["redis"]) == "it must start with redis://")
    }

    /// Every family's URL key: a bad port is an error naming the key and the line, and a password
    /// in the URL never reaches the message.
    @Test func badURLsInEveryFamilyAreConfigurationErrors() {
        let errors = ConfigLoaderTests.errors(
            """
            sinks:
              redis: {url: "redis://:hunter2@h:99999/0"}
              amqp: {urls: ["amqp://guest:hunter2@h:70000/"]}
              nats: {servers: ["nats://h:0"]}
              http: {endpoints: {hook: {url: "https://user:hunter2@h:123456/x"}}}
              conductor: {postgres: {url: "postgres://c:hunter2@db:65536/conductor"}}
            """)
        #expect(errors.count == 5, "\(errors)")
        for (key, line) in [
            ("sinks.redis.url", 2), ("sinks.amqp.urls[0]", 3), ("sinks.nats.servers[0]", 4),
            ("sinks.http.endpoints.hook.url", 5),
            ("sinks.conductor.postgres.url", 6),
        ] {
            #expect(
                errors.contains { $0.hasPrefix("sinkd.yaml:\(line):") && $0.contains(key) },
                "\(key) at line \(line): \(errors)")
        }
        #expect(!errors.joined().contains("hunter2"), "\(errors)")
        #expect(
            errors.contains {
                $0.contains(
                    "sinks.redis.url: expected a redis:// URL, got \"redis://:(hidden)@h:99999/0\": the port must be a number from 1 to 65535"
                )
            })
    }
}
