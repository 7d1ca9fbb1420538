import Testing
@testable import SinkdCore

/// The one redaction (issue 18, item 7), with plain strings.
@Suite struct RedactionTests {
    @Test func urlsLoseTheirPasswordsAndSecretQueryValues() {
        #expect(
            Redaction.urls(in: "http://svc:pw@127.0.0.1:9/hook?token=pw&x=1")
                == "http://svc:(hidden)@127.0.0.1:9/hook?token=(hidden)&x=1")
        #expect(
            Redaction.urls(in: "see amqp://guest:guest@h:5672/%2f, then")
                == "see amqp://guest:(hidden)@h:5672/%2f, then")
        #expect(Redaction.urls(in: "redis://:p@h/0") == "redis://:(hidden)@h/0")
        #expect(
            Redaction.urls(in: "https://q.amazonaws.com/?X-Amz-Signature=abc&X-Amz-Credential=AK%2F1&Action=Send")
                == "https://q.amazonaws.com/?X-Amz-Signature=(hidden)&X-Amz-Credential=(hidden)&Action=Send")
        #expect(
            Redaction.urls(in: "http://user@host/path?api_key=k#frag") == "http://user@host/path?api_key=(hidden)#frag")
        #expect(Redaction.urls(in: "no url here: a@b c:d") == "no url here: a@b c:d")
        #expect(Redaction.urls(in: "http://h/p?a=1&b=2") == "http://h/p?a=1&b=2", "ordinary parameters stay")
    }

    @Test func knownSecretsAreHiddenAnywhere() {
        let text = "remote said: Bearer s3cr3t-token was wrong; pw=hunter22; again s3cr3t-token"
        #expect(
            Redaction.text(text, secrets: ["s3cr3t-token", "hunter22"])
                == "remote said: Bearer (hidden) was wrong; pw=(hidden); again (hidden)")
    }

    @Test func secretsOfAConfiguration() throws {
        var config = SinkdConfig()
        var http = HTTPSinkConfig()
        var endpoint = HTTPEndpoint(url: "http://u:urlpass1@h/p?token=qtoken1")
        endpoint.headers = ["Authorization": "Bearer hdrtoken1", "X-Trace": "not-a-secret"]
        http.endpoints["a"] = endpoint
        config.sinks.http = http
        var nats = NATSSinkConfig()
        nats.token = "natstoken1"
        config.sinks.nats = nats
        var kafka = KafkaSinkConfig()
        kafka.sasl = KafkaSASLConfig(mechanism: .plain, username: "sinkd", password: "kafkapass1")
        config.sinks.kafka = kafka
        config.secretValues = ["fromenv1"]
        let secrets = Set(Redaction.secrets(of: config))
        for s in ["urlpass1", "qtoken1", "Bearer hdrtoken1", "hdrtoken1", "natstoken1", "kafkapass1", "fromenv1"] {
            #expect(secrets.contains(s), "\(s)")
        }
        #expect(!secrets.contains("not-a-secret"))
    }

    @Test func secretReferencesAreRecordedByTheLoader() throws {
        let config = try ConfigLoader.parse(
            yaml: """
                sinks: {http: {endpoints: {a: {url: "http://h/p", headers: {X-Custom: "${env:CUSTOM}"}}}}}
                """, file: "sinkd.yaml", environment: ["CUSTOM": "custom-value-1"])
        #expect(config.secretValues == ["custom-value-1"])
    }
}
