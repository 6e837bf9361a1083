package certs

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func initCA(t *testing.T) *CA {
	t.Helper()
	ca, err := Init(filepath.Join(t.TempDir(), "ca"), "test CA", time.Hour*24)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func verify(ca *CA, c *x509.Certificate, at time.Time, usage x509.ExtKeyUsage) error {
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	_, err := c.Verify(x509.VerifyOptions{Roots: pool, CurrentTime: at, KeyUsages: []x509.ExtKeyUsage{usage}})
	return err
}

func TestInitWritesKey0600AndRefusesOverwrite(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	ca, err := Init(dir, "", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(dir, CAKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("ca.key mode %v, want 0600", st.Mode().Perm())
	}
	if !ca.Cert.IsCA || ca.Cert.KeyUsage&x509.KeyUsageCertSign == 0 || ca.Cert.KeyUsage&x509.KeyUsageCRLSign == 0 {
		t.Fatalf("CA certificate: IsCA %v key usage %b", ca.Cert.IsCA, ca.Cert.KeyUsage)
	}
	if _, err := Init(dir, "", time.Hour); !errors.Is(err, ErrExists) {
		t.Fatalf("second Init: %v, want ErrExists", err)
	}
	loaded, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !loaded.Cert.Equal(ca.Cert) || !loaded.Key.Equal(ca.Key) {
		t.Fatal("Load returned another CA")
	}
	if _, err := Load(t.TempDir()); !errors.Is(err, ErrNoCA) {
		t.Fatalf("Load of an empty dir: %v, want ErrNoCA", err)
	}
}

func TestClientCertificate(t *testing.T) {
	ca := initCA(t)
	key, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	iss, err := ca.IssueClient("sensor-1", &key.PublicKey, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c := iss.Cert
	if c.Subject.CommonName != "sensor-1" {
		t.Fatalf("CN %q", c.Subject.CommonName)
	}
	if len(c.ExtKeyUsage) != 1 || c.ExtKeyUsage[0] != x509.ExtKeyUsageClientAuth {
		t.Fatalf("ext key usage %v, want clientAuth only", c.ExtKeyUsage)
	}
	if c.KeyUsage != x509.KeyUsageDigitalSignature || c.IsCA {
		t.Fatalf("key usage %b IsCA %v", c.KeyUsage, c.IsCA)
	}
	if err := verify(ca, c, time.Now(), x509.ExtKeyUsageClientAuth); err != nil {
		t.Fatalf("client chain: %v", err)
	}
	if err := verify(ca, c, time.Now(), x509.ExtKeyUsageServerAuth); err == nil {
		t.Fatal("a client certificate verified as a server certificate")
	}
	if err := verify(ca, c, time.Now().Add(2*time.Hour), x509.ExtKeyUsageClientAuth); err == nil {
		t.Fatal("verified after expiry")
	}
	if time.Until(c.NotAfter) > time.Hour+time.Minute {
		t.Fatalf("NotAfter %v is more than 1h away", c.NotAfter)
	}
	parsed, err := ParseCert(iss.PEM)
	if err != nil || !parsed.Equal(c) {
		t.Fatalf("PEM round trip: %v", err)
	}
	if got, err := ParseSerial(iss.Serial()); err != nil || got.Cmp(c.SerialNumber) != 0 {
		t.Fatalf("serial round trip %s: %v", iss.Serial(), err)
	}
	// Another CA's client is not verified by this one.
	other := initCA(t)
	if err := verify(other, c, time.Now(), x509.ExtKeyUsageClientAuth); err == nil {
		t.Fatal("verified under a foreign CA")
	}
	// Validity is capped by the CA's.
	long, err := ca.IssueClient("sensor-2", &key.PublicKey, 100*365*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if long.Cert.NotAfter.After(ca.Cert.NotAfter) {
		t.Fatal("client outlives its CA")
	}
}

func TestClientWithNewKey(t *testing.T) {
	ca := initCA(t)
	iss, key, err := ca.IssueClientKey("iotpipe-bridge", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if iss.Cert.Subject.CommonName != "iotpipe-bridge" {
		t.Fatalf("CN %q", iss.Cert.Subject.CommonName)
	}
	if !key.PublicKey.Equal(iss.Cert.PublicKey) {
		t.Fatal("the certificate is not for the returned key")
	}
	if err := verify(ca, iss.Cert, time.Now(), x509.ExtKeyUsageClientAuth); err != nil {
		t.Fatalf("client chain: %v", err)
	}
	if _, _, err := ca.IssueClientKey("a/b", time.Hour); err == nil {
		t.Fatal("issued a client certificate for an invalid id")
	}
}

func TestExpiredClient(t *testing.T) {
	ca := initCA(t)
	key, _ := NewKey()
	iss, err := ca.IssueClientBetween("old", &key.PublicKey, time.Now().Add(-2*time.Hour), time.Now().Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	var inv x509.CertificateInvalidError
	if err := verify(ca, iss.Cert, time.Now(), x509.ExtKeyUsageClientAuth); !errors.As(err, &inv) || inv.Reason != x509.Expired {
		t.Fatalf("expired certificate: %v", err)
	}
}

func TestBadIDs(t *testing.T) {
	ca := initCA(t)
	key, _ := NewKey()
	for _, id := range []string{"", "a/b", "+", "a#", "with space", "-lead", strings.Repeat("x", 129)} {
		if _, err := ca.IssueClient(id, &key.PublicKey, time.Hour); !errors.Is(err, ErrBadID) {
			t.Errorf("id %q: %v, want ErrBadID", id, err)
		}
	}
}

func csr(t *testing.T, cn string) ([]byte, any) {
	t.Helper()
	key, _ := NewKey()
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}}, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), &key.PublicKey
}

func TestClientFromCSR(t *testing.T) {
	ca := initCA(t)
	req, pub := csr(t, "dev-7")
	iss, err := ca.IssueClientCSR("dev-7", req, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if iss.Cert.Subject.CommonName != "dev-7" || !iss.Cert.PublicKey.(*ecdsa.PublicKey).Equal(pub) {
		t.Fatal("CSR certificate: wrong CN or key")
	}
	if err := verify(ca, iss.Cert, time.Now(), x509.ExtKeyUsageClientAuth); err != nil {
		t.Fatal(err)
	}
	if _, err := ca.IssueClientCSR("dev-8", req, time.Hour); !errors.Is(err, ErrBadCSR) {
		t.Fatalf("CSR for another device: %v, want ErrBadCSR", err)
	}
	if _, err := ca.IssueClientCSR("dev-7", []byte("garbage"), time.Hour); !errors.Is(err, ErrBadCSR) {
		t.Fatalf("garbage CSR: %v", err)
	}
	// A tampered request fails its signature check.
	blk, _ := pem.Decode(req)
	blk.Bytes[len(blk.Bytes)-5] ^= 0xff
	if _, err := ca.IssueClientCSR("dev-7", pem.EncodeToMemory(blk), time.Hour); !errors.Is(err, ErrBadCSR) {
		t.Fatalf("tampered CSR: %v", err)
	}
}

func TestServerCertificate(t *testing.T) {
	ca := initCA(t)
	iss, key, err := ca.IssueServer([]string{"localhost", "mqtt.example"}, []net.IP{net.ParseIP("127.0.0.1")}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c := iss.Cert
	if !key.PublicKey.Equal(c.PublicKey) {
		t.Fatal("key does not match")
	}
	if len(c.ExtKeyUsage) != 1 || c.ExtKeyUsage[0] != x509.ExtKeyUsageServerAuth {
		t.Fatalf("ext key usage %v, want serverAuth only", c.ExtKeyUsage)
	}
	for _, name := range []string{"localhost", "mqtt.example", "127.0.0.1"} {
		if err := c.VerifyHostname(name); err != nil {
			t.Errorf("name %s: %v", name, err)
		}
	}
	if err := c.VerifyHostname("other.example"); err == nil {
		t.Error("verified for a name it does not hold")
	}
	if err := verify(ca, c, time.Now(), x509.ExtKeyUsageServerAuth); err != nil {
		t.Fatal(err)
	}
	if err := verify(ca, c, time.Now(), x509.ExtKeyUsageClientAuth); err == nil {
		t.Fatal("server certificate verified as a client certificate")
	}
	if _, _, err := ca.IssueServer(nil, nil, time.Hour); err == nil {
		t.Fatal("server certificate without names")
	}
}

func TestCRL(t *testing.T) {
	ca := initCA(t)
	key, _ := NewKey()
	a, _ := ca.IssueClient("a", &key.PublicKey, time.Hour)
	b, _ := ca.IssueClient("b", &key.PublicKey, time.Hour)
	at := time.Now().Add(-time.Minute).Truncate(time.Second)
	p, err := ca.CRL([]Revoked{{Serial: a.Cert.SerialNumber, RevokedAt: at}}, big.NewInt(time.Now().UnixNano()), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	crl, err := ParseCRL(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := crl.CheckSignatureFrom(ca.Cert); err != nil {
		t.Fatalf("CRL signature: %v", err)
	}
	if len(crl.RevokedCertificateEntries) != 1 || crl.RevokedCertificateEntries[0].SerialNumber.Cmp(a.Cert.SerialNumber) != 0 {
		t.Fatalf("CRL entries %v, want only %s", crl.RevokedCertificateEntries, a.Serial())
	}
	if !crl.RevokedCertificateEntries[0].RevocationTime.Equal(at) {
		t.Fatalf("revocation time %v, want %v", crl.RevokedCertificateEntries[0].RevocationTime, at)
	}
	for _, e := range crl.RevokedCertificateEntries {
		if e.SerialNumber.Cmp(b.Cert.SerialNumber) == 0 {
			t.Fatal("b is listed")
		}
	}
	if crl.NextUpdate.Before(time.Now().Add(50 * time.Minute)) {
		t.Fatalf("NextUpdate %v", crl.NextUpdate)
	}
}

func TestWriteKeyPairModes(t *testing.T) {
	ca := initCA(t)
	key, _ := NewKey()
	iss, _ := ca.IssueClient("d1", &key.PublicKey, time.Hour)
	dir := t.TempDir()
	cp, kp, err := WriteKeyPair(dir, "d1", iss.PEM, key)
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]os.FileMode{cp: 0o644, kp: 0o600} {
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != want {
			t.Errorf("%s mode %v want %v", path, st.Mode().Perm(), want)
		}
	}
	back, err := LoadKeyFile(kp)
	if err != nil || !back.Equal(key) {
		t.Fatalf("LoadKeyFile: %v", err)
	}
	// A key file's content never appears in an error.
	bad := filepath.Join(dir, "bad.key")
	_ = os.WriteFile(bad, []byte("-----BEGIN PRIVATE KEY-----\nU0VDUkVUU0VDUkVU\n-----END PRIVATE KEY-----\n"), 0o600)
	if _, err := LoadKeyFile(bad); err == nil || strings.Contains(err.Error(), "U0VDUkVU") {
		t.Fatalf("bad key: %v", err)
	}
}

// A device may not take the name of a service identity: the broker's ACL
// grants those names more than a device may do.
func TestCheckDeviceIDRefusesServiceIdentities(t *testing.T) {
	for _, id := range []string{"iotpipe", "device", "iotpipe-bridge", "iotpipe-api"} {
		if err := CheckDeviceID(id); !errors.Is(err, ErrReservedID) {
			t.Errorf("CheckDeviceID(%q) = %v, want ErrReservedID", id, err)
		}
	}
	for _, id := range []string{"sensor-1", "iotpipe2", "devices", "pump.7"} {
		if err := CheckDeviceID(id); err != nil {
			t.Errorf("CheckDeviceID(%q) = %v, want nil", id, err)
		}
	}
	if err := CheckDeviceID("a/b"); !errors.Is(err, ErrBadID) {
		t.Errorf("CheckDeviceID(a/b) = %v, want ErrBadID", err)
	}
}
