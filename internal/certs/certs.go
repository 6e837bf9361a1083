// Package certs is iotpipe's small certificate authority, on the standard
// library only (crypto/x509, ECDSA P-256): it creates the root CA, issues
// device client certificates (CN = device id) and broker server
// certificates, and writes the certificate revocation list (CRL) that
// Mosquitto's crlfile reads.
//
// # Contracts
//
//   - Keys are ECDSA P-256, written as PKCS#8 PEM with mode 0600; no
//     function of this package logs or returns a key in an error.
//   - A client certificate has the device id as its only subject CN, key
//     usage digitalSignature and extended key usage clientAuth only; a
//     server certificate has serverAuth only and its names as DNS/IP SANs.
//     A certificate is never valid for both sides.
//   - Serial numbers are 128 random bits (positive), unique in practice;
//     the registry records them so a revocation names the exact
//     certificate.
//   - Files are written atomically (temporary file, fsync, rename); Init
//     refuses to overwrite an existing CA ([ErrExists]).
package certs

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// File names inside a CA directory.
const (
	CACertFile = "ca.crt"
	CAKeyFile  = "ca.key"
	CRLFile    = "crl.pem"
)

// Default validities.
const (
	DefaultCAValidity     = 10 * 365 * 24 * time.Hour
	DefaultClientValidity = 2 * 365 * 24 * time.Hour
	DefaultServerValidity = 365 * 24 * time.Hour
	DefaultCRLValidity    = 365 * 24 * time.Hour
)

// Errors callers test with errors.Is.
var (
	// ErrExists: Init found a CA (certificate or key) already in the directory.
	ErrExists = errors.New("a CA already exists there")
	// ErrNoCA: the directory holds no CA (run iotpipe ca init).
	ErrNoCA = errors.New("no CA there")
	// ErrBadID: a device id cannot be a certificate CN and MQTT topic level.
	ErrBadID = errors.New("invalid device id")
	// ErrBadCSR: a certificate signing request is malformed, badly signed or
	// names another device.
	ErrBadCSR = errors.New("invalid certificate signing request")
)

// idRE is what a device id may be: it is an MQTT topic level and the
// certificate CN (which Mosquitto uses as the user name for the ACL
// patterns), so no '/', '+', '#', spaces or control characters.
var idRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$`)

// CheckID reports whether id can be a device id (1-128 characters, letters,
// digits, '.', '_', ':' and '-', starting with a letter or digit).
func CheckID(id string) error {
	if !idRE.MatchString(id) {
		return fmt.Errorf("%w %q: want 1-128 of A-Z a-z 0-9 . _ : - starting with a letter or digit (it is the MQTT topic level and the certificate CN)", ErrBadID, id)
	}
	return nil
}

// ErrReservedID: the id is one of the service identities the broker's ACL
// grants more than a device (the bridge's "iotpipe-bridge", the password
// users "iotpipe" and "device", and every "iotpipe-…" name kept for
// services); a device with that CN would get those rights.
var ErrReservedID = errors.New("reserved for a service identity")

// CheckDeviceID is CheckID for a device: it also refuses the service
// identities (ErrReservedID).
func CheckDeviceID(id string) error {
	if err := CheckID(id); err != nil {
		return err
	}
	if id == "iotpipe" || id == "device" || strings.HasPrefix(id, "iotpipe-") {
		return fmt.Errorf("device id %q: %w: the broker's ACL grants that name more than a device may do; choose another id", id, ErrReservedID)
	}
	return nil
}

// CA is a loaded certificate authority.
type CA struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
	// Dir is where it was loaded from ("" for an in-memory CA).
	Dir string
}

// NewKey returns a new ECDSA P-256 key.
func NewKey() (*ecdsa.PrivateKey, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("certs: generate key: %w", err)
	}
	return k, nil
}

func newSerial() (*big.Int, error) {
	max := new(big.Int).Lsh(big.NewInt(1), 128)
	s, err := rand.Int(rand.Reader, max)
	if err != nil {
		return nil, fmt.Errorf("certs: serial: %w", err)
	}
	return s.Add(s, big.NewInt(1)), nil // never 0
}

func keyID(pub crypto.PublicKey) []byte {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil
	}
	sum := sha1.Sum(der) // RFC 5280 method 1 key identifier, not a security function
	return sum[:]
}

// New creates an in-memory CA named cn, valid from now for validity.
func New(cn string, validity time.Duration) (*CA, error) {
	if cn == "" {
		cn = "iotpipe CA"
	}
	key, err := NewKey()
	if err != nil {
		return nil, err
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cn, Organization: []string{"iotpipe"}},
		NotBefore:             now.Add(-5 * time.Minute),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
		SubjectKeyId:          keyID(&key.PublicKey),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("certs: create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("certs: parse CA certificate: %w", err)
	}
	return &CA{Cert: cert, Key: key}, nil
}

// Init creates a CA in dir (created 0700 if missing): ca.crt (0644) and
// ca.key (0600). It refuses with ErrExists when either file is there.
func Init(dir, cn string, validity time.Duration) (*CA, error) {
	for _, f := range []string{CACertFile, CAKeyFile} {
		if _, err := os.Stat(filepath.Join(dir, f)); err == nil {
			return nil, fmt.Errorf("certs: init CA in %s: %w (%s)", dir, ErrExists, f)
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("certs: init CA: %w", err)
	}
	ca, err := New(cn, validity)
	if err != nil {
		return nil, err
	}
	keyPEM, err := EncodeKey(ca.Key)
	if err != nil {
		return nil, err
	}
	// The key first: a certificate without its key would look like a CA.
	if err := WriteFile(filepath.Join(dir, CAKeyFile), keyPEM, 0o600); err != nil {
		return nil, err
	}
	if err := WriteFile(filepath.Join(dir, CACertFile), EncodeCert(ca.Cert.Raw), 0o644); err != nil {
		return nil, err
	}
	ca.Dir = dir
	return ca, nil
}

// Load reads the CA of dir (ca.crt and ca.key).
func Load(dir string) (*CA, error) {
	certPath, keyPath := filepath.Join(dir, CACertFile), filepath.Join(dir, CAKeyFile)
	if _, err := os.Stat(certPath); errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("certs: load CA from %s: %w (no %s; run iotpipe ca init)", dir, ErrNoCA, CACertFile)
	}
	cert, err := LoadCertFile(certPath)
	if err != nil {
		return nil, err
	}
	key, err := LoadKeyFile(keyPath)
	if err != nil {
		return nil, err
	}
	if !cert.IsCA {
		return nil, fmt.Errorf("certs: load CA: %s is not a CA certificate", certPath)
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		return nil, fmt.Errorf("certs: load CA: %s does not belong to %s", keyPath, certPath)
	}
	return &CA{Cert: cert, Key: key, Dir: dir}, nil
}

// Issued is a certificate the CA signed.
type Issued struct {
	Cert *x509.Certificate
	PEM  []byte
}

// Serial returns the serial number as lower-case hex, the form the
// registry stores.
func (i *Issued) Serial() string { return SerialHex(i.Cert.SerialNumber) }

// SerialHex formats a serial number as lower-case hex.
func SerialHex(s *big.Int) string { return s.Text(16) }

// ParseSerial parses SerialHex's form.
func ParseSerial(s string) (*big.Int, error) {
	n, ok := new(big.Int).SetString(s, 16)
	if !ok || n.Sign() <= 0 {
		return nil, fmt.Errorf("certs: serial %q is not a positive hex number", s)
	}
	return n, nil
}

func (ca *CA) sign(tmpl *x509.Certificate, pub crypto.PublicKey) (*Issued, error) {
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	tmpl.SerialNumber = serial
	tmpl.AuthorityKeyId = ca.Cert.SubjectKeyId
	tmpl.SubjectKeyId = keyID(pub)
	if tmpl.NotAfter.After(ca.Cert.NotAfter) {
		tmpl.NotAfter = ca.Cert.NotAfter
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("certs: sign %q: %w", tmpl.Subject.CommonName, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("certs: parse issued certificate: %w", err)
	}
	return &Issued{Cert: cert, PEM: EncodeCert(der)}, nil
}

// IssueClient signs a client certificate with CN=id for pub, valid from
// now (less five minutes of clock skew) for validity.
func (ca *CA) IssueClient(id string, pub crypto.PublicKey, validity time.Duration) (*Issued, error) {
	return ca.IssueClientBetween(id, pub, time.Now().Add(-5*time.Minute), time.Now().Add(validity))
}

// IssueClientKey makes a new ECDSA P-256 key and signs a client
// certificate with CN=id for it (IssueClient), returning both.
func (ca *CA) IssueClientKey(id string, validity time.Duration) (*Issued, *ecdsa.PrivateKey, error) {
	key, err := NewKey()
	if err != nil {
		return nil, nil, err
	}
	iss, err := ca.IssueClient(id, &key.PublicKey, validity)
	if err != nil {
		return nil, nil, err
	}
	return iss, key, nil
}

// IssueClientBetween is IssueClient with an explicit validity period (for
// tests of expired and not yet valid certificates, and for imports).
func (ca *CA) IssueClientBetween(id string, pub crypto.PublicKey, notBefore, notAfter time.Time) (*Issued, error) {
	if err := CheckID(id); err != nil {
		return nil, err
	}
	return ca.sign(&x509.Certificate{
		Subject:     pkix.Name{CommonName: id},
		NotBefore:   notBefore,
		NotAfter:    notAfter,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, pub)
}

// IssueClientCSR signs a client certificate for the key of a PEM
// certificate signing request. The CSR's signature must verify; its CN, if
// any, must be id; everything else in it (SANs, extensions) is ignored.
func (ca *CA) IssueClientCSR(id string, csrPEM []byte, validity time.Duration) (*Issued, error) {
	b, _ := pem.Decode(csrPEM)
	if b == nil || b.Type != "CERTIFICATE REQUEST" {
		return nil, fmt.Errorf("%w: no PEM CERTIFICATE REQUEST block", ErrBadCSR)
	}
	csr, err := x509.ParseCertificateRequest(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadCSR, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("%w: signature: %w", ErrBadCSR, err)
	}
	if cn := csr.Subject.CommonName; cn != "" && cn != id {
		return nil, fmt.Errorf("%w: its CN is %q, not the device id %q", ErrBadCSR, cn, id)
	}
	return ca.IssueClient(id, csr.PublicKey, validity)
}

// IssueServer signs a server certificate for the names (DNS names and IP
// addresses as SANs; the first DNS name, or else the first IP, is also the
// CN) and returns it with its new key.
func (ca *CA) IssueServer(dnsNames []string, ips []net.IP, validity time.Duration) (*Issued, *ecdsa.PrivateKey, error) {
	if len(dnsNames) == 0 && len(ips) == 0 {
		return nil, nil, errors.New("certs: a server certificate needs at least one DNS name or IP address")
	}
	key, err := NewKey()
	if err != nil {
		return nil, nil, err
	}
	cn := ""
	if len(dnsNames) > 0 {
		cn = dnsNames[0]
	} else {
		cn = ips[0].String()
	}
	now := time.Now()
	iss, err := ca.sign(&x509.Certificate{
		Subject:     pkix.Name{CommonName: cn},
		NotBefore:   now.Add(-5 * time.Minute),
		NotAfter:    now.Add(validity),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:    dnsNames,
		IPAddresses: ips,
	}, &key.PublicKey)
	if err != nil {
		return nil, nil, err
	}
	return iss, key, nil
}

// Revoked is one revoked certificate for the CRL.
type Revoked struct {
	Serial    *big.Int
	RevokedAt time.Time
}

// CRL returns a PEM CRL signed by the CA listing revoked, valid for
// validity (Mosquitto refuses every client once NextUpdate passed, so
// rewrite it before: every revoke does, and so does iotpipe ca crl).
// number must rise with every CRL issued; the current time in
// nanoseconds is a fine choice.
func (ca *CA) CRL(revoked []Revoked, number *big.Int, validity time.Duration) ([]byte, error) {
	entries := make([]x509.RevocationListEntry, len(revoked))
	for i, r := range revoked {
		entries[i] = x509.RevocationListEntry{SerialNumber: r.Serial, RevocationTime: r.RevokedAt.UTC()}
	}
	now := time.Now()
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number:                    number,
		ThisUpdate:                now.Add(-5 * time.Minute),
		NextUpdate:                now.Add(validity),
		RevokedCertificateEntries: entries,
	}, ca.Cert, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("certs: create CRL: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der}), nil
}

// EncodeCert returns DER as a PEM CERTIFICATE block.
func EncodeCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// EncodeKey returns key as a PEM PRIVATE KEY (PKCS#8) block.
func EncodeKey(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("certs: encode key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// ParseCert parses the first PEM CERTIFICATE block of b.
func ParseCert(b []byte) (*x509.Certificate, error) {
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return nil, errors.New("certs: no PEM CERTIFICATE block")
		}
		if blk.Type == "CERTIFICATE" {
			c, err := x509.ParseCertificate(blk.Bytes)
			if err != nil {
				return nil, fmt.Errorf("certs: parse certificate: %w", err)
			}
			return c, nil
		}
	}
}

// LoadCertFile reads a PEM certificate file.
func LoadCertFile(path string) (*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("certs: read certificate: %w", err)
	}
	c, err := ParseCert(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// LoadKeyFile reads a PEM ECDSA private key (PKCS#8 or SEC 1). The error
// never holds the file's content.
func LoadKeyFile(path string) (*ecdsa.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("certs: read key: %w", err)
	}
	for rest := b; ; {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			return nil, fmt.Errorf("certs: %s: no PEM PRIVATE KEY or EC PRIVATE KEY block", path)
		}
		switch blk.Type {
		case "PRIVATE KEY":
			k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
			if err != nil {
				return nil, fmt.Errorf("certs: %s: parse key: %w", path, err)
			}
			ek, ok := k.(*ecdsa.PrivateKey)
			if !ok {
				return nil, fmt.Errorf("certs: %s: not an ECDSA key (%T)", path, k)
			}
			return ek, nil
		case "EC PRIVATE KEY":
			k, err := x509.ParseECPrivateKey(blk.Bytes)
			if err != nil {
				return nil, fmt.Errorf("certs: %s: parse key: %w", path, err)
			}
			return k, nil
		}
	}
}

// LoadPool reads a PEM file of CA certificates into a pool.
func LoadPool(path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("certs: read CA file: %w", err)
	}
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("certs: %s holds no PEM certificate", path)
	}
	return p, nil
}

// ParseCRL parses a PEM CRL.
func ParseCRL(b []byte) (*x509.RevocationList, error) {
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "X509 CRL" {
		return nil, errors.New("certs: no PEM X509 CRL block")
	}
	crl, err := x509.ParseRevocationList(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("certs: parse CRL: %w", err)
	}
	return crl, nil
}

// WriteFile writes data to path atomically with mode: a temporary file in
// the same directory, fsync, chmod, rename. An existing file is replaced.
func WriteFile(path string, data []byte, mode os.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("certs: write %s: %w", path, err)
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			_ = os.Remove(tmp)
		}
	}()
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return fmt.Errorf("certs: write %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("certs: write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("certs: write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("certs: write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("certs: write %s: %w", path, err)
	}
	ok = true
	return nil
}

// WriteKeyPair writes cert (0644) and key (0600) PEM files into dir as
// <name>.crt and <name>.key, the key first, and returns their paths.
func WriteKeyPair(dir, name string, certPEM []byte, key *ecdsa.PrivateKey) (certPath, keyPath string, err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", "", fmt.Errorf("certs: %w", err)
	}
	keyPEM, err := EncodeKey(key)
	if err != nil {
		return "", "", err
	}
	certPath, keyPath = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	if err := WriteFile(keyPath, keyPEM, 0o600); err != nil {
		return "", "", err
	}
	if err := WriteFile(certPath, certPEM, 0o644); err != nil {
		return "", "", err
	}
	return certPath, keyPath, nil
}
