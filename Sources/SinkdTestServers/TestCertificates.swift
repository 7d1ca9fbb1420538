import Foundation

/// A CA, a server certificate for 127.0.0.1 and localhost, and a client certificate, made with
/// openssl (Debian, installed by scripts/test) for one test.
public struct TestCertificates: Sendable {
    public let directory: String
    public var caFile: String { directory + "/ca.pem" }
    public var certificateFile: String { directory + "/server.pem" }
    public var keyFile: String { directory + "/server-key.pem" }
    public var clientCertificateFile: String { directory + "/client.pem" }
    public var clientKeyFile: String { directory + "/client-key.pem" }

    public init(in directory: String) throws {
        self.directory = directory
        let script = """
            set -e
            cd '\(directory)'
            openssl req -x509 -newkey rsa:2048 -nodes -keyout ca-key.pem -out ca.pem -days 2 -subj /CN=sinkd-test-ca 2>/dev/null
            openssl req -newkey rsa:2048 -nodes -keyout server-key.pem -out server.csr -subj /CN=localhost 2>/dev/null
            printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\n' > san.ext
            openssl x509 -req -in server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -out server.pem -days 2 -extfile san.ext 2>/dev/null
            openssl req -newkey rsa:2048 -nodes -keyout client-key.pem -out client.csr -subj /CN=sinkd-client 2>/dev/null
            printf 'extendedKeyUsage=clientAuth\\n' > client.ext
            openssl x509 -req -in client.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -out client.pem -days 2 -extfile client.ext 2>/dev/null
            """
        do {
            try ServerProcess.run("/bin/sh", ["-c", script])
        } catch {
            throw TestServerFailure("openssl could not make the test certificates (apt-get install openssl): \(error)")
        }
    }
}
