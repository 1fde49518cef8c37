//! TLS to the database (`sslmode`, `sslrootcert`), against the PostgreSQL at 127.0.0.1:5432
//! as Debian runs it: `ssl = on` with the snakeoil certificate (self-signed, `CN=localhost`,
//! in /etc/ssl/certs/ssl-cert-snakeoil.pem). Each mode is checked on the server's side too:
//! `pg_stat_ssl` says whether the store's own connection is encrypted.

use fhir_store::Store;
use fhir_store_postgres::scratch::ScratchDatabase;
use fhir_store_postgres::{PgConfig, PgStore};

const SNAKEOIL: &str = "/etc/ssl/certs/ssl-cert-snakeoil.pem";

/// Whether the connections of `app` are encrypted, each distinct answer once (a store opens
/// more than one: its pool and its change-feed listener).
async fn encrypted(app: &str) -> Vec<bool> {
    let (client, conn) = tokio_postgres::connect(
        "host=127.0.0.1 port=5432 user=postgres dbname=postgres",
        tokio_postgres::NoTls,
    )
    .await
    .expect("admin connection");
    tokio::spawn(conn);
    client
        .query(
            "SELECT DISTINCT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.application_name = $1",
            &[&app],
        )
        .await
        .expect("pg_stat_ssl")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

fn small() -> PgConfig {
    PgConfig {
        pool_size: 1,
        ..PgConfig::default()
    }
}

async fn open(url: &str) -> Result<PgStore, fhir_store::StoreError> {
    let store = PgStore::connect(url, small()).await?;
    // A pooled connection stays open for pg_stat_ssl to see.
    store.create_service("tls").await?;
    Ok(store)
}

#[tokio::test]
async fn sslmode_encrypts_and_verifies_as_libpq_does() {
    let ssl_on = {
        let (client, conn) = tokio_postgres::connect(
            "host=127.0.0.1 port=5432 user=postgres dbname=postgres",
            tokio_postgres::NoTls,
        )
        .await
        .expect("admin connection");
        tokio::spawn(conn);
        let v: String = client.query_one("SHOW ssl", &[]).await.unwrap().get(0);
        v
    };
    assert_eq!(
        ssl_on, "on",
        "this test needs the PostgreSQL at 127.0.0.1:5432 with ssl = on (Debian's default, with its snakeoil certificate)"
    );
    assert!(
        std::path::Path::new(SNAKEOIL).exists(),
        "{SNAKEOIL} is missing"
    );
    let db = ScratchDatabase::create().await.expect("scratch database");
    let name = db.name().to_owned();
    let url = |host: &str, params: &str, app: &str| {
        format!("postgres://postgres@{host}:5432/{name}?application_name={app}&{params}")
    };

    // require: encrypted, the certificate not checked.
    let s = open(&url("127.0.0.1", "sslmode=require", "tls-require"))
        .await
        .expect("require");
    assert_eq!(encrypted("tls-require").await, vec![true]);
    drop(s);
    // disable: in the clear.
    let s = open(&url("127.0.0.1", "sslmode=disable", "tls-disable"))
        .await
        .expect("disable");
    assert_eq!(encrypted("tls-disable").await, vec![false]);
    drop(s);
    // prefer (the default): encrypted when the server offers it.
    let s = open(&url("127.0.0.1", "", "tls-prefer"))
        .await
        .expect("prefer");
    assert_eq!(encrypted("tls-prefer").await, vec![true]);
    drop(s);
    // verify-full with the server's certificate as the root, under the name it carries.
    let full = format!("sslmode=verify-full&sslrootcert={SNAKEOIL}");
    let s = open(&url("localhost", &full, "tls-full"))
        .await
        .expect("verify-full as localhost");
    assert_eq!(encrypted("tls-full").await, vec![true]);
    drop(s);
    // verify-full under a name the certificate does not carry: refused, saying why.
    let e = open(&url("127.0.0.1", &full, "tls-full-ip"))
        .await
        .expect_err("a name mismatch");
    assert!(e.to_string().contains("cannot connect"), "{e}");
    assert!(encrypted("tls-full-ip").await.is_empty());
    // verify-ca checks the chain, not the name.
    let ca = format!("sslmode=verify-ca&sslrootcert={SNAKEOIL}");
    let s = open(&url("127.0.0.1", &ca, "tls-ca"))
        .await
        .expect("verify-ca");
    assert_eq!(encrypted("tls-ca").await, vec![true]);
    drop(s);
    // A root that did not sign the server's certificate: refused.
    let other = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(other.path(), OTHER_ROOT).unwrap();
    let wrong = format!("sslmode=verify-ca&sslrootcert={}", other.path().display());
    let e = open(&url("127.0.0.1", &wrong, "tls-wrong"))
        .await
        .expect_err("an unknown issuer");
    assert!(e.to_string().contains("cannot connect"), "{e}");
    // Settings that cannot be taken.
    assert!(open(&url("127.0.0.1", "sslmode=sometimes", "x"))
        .await
        .is_err());
    let e = open(&url(
        "127.0.0.1",
        "sslmode=verify-full&sslrootcert=/nonexistent.pem",
        "x",
    ))
    .await
    .expect_err("a missing root file");
    assert!(e.to_string().contains("/nonexistent.pem"), "{e}");
}

/// A self-signed certificate that has nothing to do with the server's (ISRG Root X1).
const OTHER_ROOT: &str = "-----BEGIN CERTIFICATE-----
MIIFazCCA1OgAwIBAgIRAIIQz7DSQONZRGPgu2OCiwAwDQYJKoZIhvcNAQELBQAw
TzELMAkGA1UEBhMCVVMxKTAnBgNVBAoTIEludGVybmV0IFNlY3VyaXR5IFJlc2Vh
cmNoIEdyb3VwMRUwEwYDVQQDEwxJU1JHIFJvb3QgWDEwHhcNMTUwNjA0MTEwNDM4
WhcNMzUwNjA0MTEwNDM4WjBPMQswCQYDVQQGEwJVUzEpMCcGA1UEChMgSW50ZXJu
ZXQgU2VjdXJpdHkgUmVzZWFyY2ggR3JvdXAxFTATBgNVBAMTDElTUkcgUm9vdCBY
MTCCAiIwDQYJKoZIhvcNAQEBBQADggIPADCCAgoCggIBAK3oJHP0FDfzm54rVygc
h77ct984kIxuPOZXoHj3dcKi/vVqbvYATyjb3miGbESTtrFj/RQSa78f0uoxmyF+
0TM8ukj13Xnfs7j/EvEhmkvBioZxaUpmZmyPfjxwv60pIgbz5MDmgK7iS4+3mX6U
A5/TR5d8mUgjU+g4rk8Kb4Mu0UlXjIB0ttov0DiNewNwIRt18jA8+o+u3dpjq+sW
T8KOEUt+zwvo/7V3LvSye0rgTBIlDHCNAymg4VMk7BPZ7hm/ELNKjD+Jo2FR3qyH
B5T0Y3HsLuJvW5iB4YlcNHlsdu87kGJ55tukmi8mxdAQ4Q7e2RCOFvu396j3x+UC
B5iPNgiV5+I3lg02dZ77DnKxHZu8A/lJBdiB3QW0KtZB6awBdpUKD9jf1b0SHzUv
KBds0pjBqAlkd25HN7rOrFleaJ1/ctaJxQZBKT5ZPt0m9STJEadao0xAH0ahmbWn
OlFuhjuefXKnEgV4We0+UXgVCwOPjdAvBbI+e0ocS3MFEvzG6uBQE3xDk3SzynTn
jh8BCNAw1FtxNrQHusEwMFxIt4I7mKZ9YIqioymCzLq9gwQbooMDQaHWBfEbwrbw
qHyGO0aoSCqI3Haadr8faqU9GY/rOPNk3sgrDQoo//fb4hVC1CLQJ13hef4Y53CI
rU7m2Ys6xt0nUW7/vGT1M0NPAgMBAAGjQjBAMA4GA1UdDwEB/wQEAwIBBjAPBgNV
HRMBAf8EBTADAQH/MB0GA1UdDgQWBBR5tFnme7bl5AFzgAiIyBpY9umbbjANBgkq
hkiG9w0BAQsFAAOCAgEAVR9YqbyyqFDQDLHYGmkgJykIrGF1XIpu+ILlaS/V9lZL
ubhzEFnTIZd+50xx+7LSYK05qAvqFyFWhfFQDlnrzuBZ6brJFe+GnY+EgPbk6ZGQ
3BebYhtF8GaV0nxvwuo77x/Py9auJ/GpsMiu/X1+mvoiBOv/2X/qkSsisRcOj/KK
NFtY2PwByVS5uCbMiogziUwthDyC3+6WVwW6LLv3xLfHTjuCvjHIInNzktHCgKQ5
ORAzI4JMPJ+GslWYHb4phowim57iaztXOoJwTdwJx4nLCgdNbOhdjsnvzqvHu7Ur
TkXWStAmzOVyyghqpZXjFaH3pO3JLF+l+/+sKAIuvtd7u+Nxe5AW0wdeRlN8NwdC
jNPElpzVmbUq4JUagEiuTDkHzsxHpFKVK7q4+63SM1N95R1NbdWhscdCb+ZAJzVc
oyi3B43njTOQ5yOf+1CceWxG1bQVs5ZufpsMljq4Ui0/1lvh+wjChP4kqKOJ2qxq
4RgqsahDYVvTH9w7jXbyLeiNdd8XM2w9U/t7y0Ff/9yi0GE44Za4rF2LN9d11TPA
mRGunUHBcnWEvgJBQl9nJEiU0Zsnvgc/ubhPgXRR4Xq37Z0j4r7g1SgEEzwxA57d
emyPxgcYxn/eR44/KJ4EBs+lVDR3veyJm+kXQ99b21/+jh5Xos1AnX5iItreGCc=
-----END CERTIFICATE-----
";
