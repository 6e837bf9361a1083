package registry

// What the broker must be told after a change: Mosquitto checks the CRL
// (crlfile) only during the TLS handshake and reads it at start and on
// SIGHUP; it checks the acl_file on every PUBLISH and SUBSCRIBE, also for
// connections already open, and rereads it on SIGHUP too (both measured on
// Mosquitto 2.0.11). So a revocation takes three steps: the CRL (no new
// connection), a "topic deny #" section for the device in the ACL file (no
// more publishing or subscribing on the connection it has open), and
// SIGHUP to the broker.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/big"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/iotpipe/iotpipe/internal/certs"
)

// ACLMarker starts the part of the ACL file that ApplyBroker rewrites;
// everything before it is left as it is.
const ACLMarker = "# --- iotpipe: devices denied everything (disabled or revoked); written by iotpipe devices, do not edit below ---"

// BrokerFiles are the broker's files a registry change rewrites. Empty
// fields are skipped.
type BrokerFiles struct {
	// CA signs the CRL; CRLFile is where Mosquitto's crlfile points.
	CA      *certs.CA
	CRLFile string
	// CRLValidity is the CRL's NextUpdate from now. Mosquitto (OpenSSL)
	// refuses every client once it has passed, so rewrite it before (any
	// devices command that changes a status does; so does iotpipe ca crl).
	CRLValidity time.Duration
	// ACLFile is Mosquitto's acl_file.
	ACLFile string
	// PIDFile holds the broker's process id, to send it SIGHUP.
	PIDFile string
}

// BrokerResult says what ApplyBroker did.
type BrokerResult struct {
	Revoked  int      // certificates in the CRL
	Denied   []string // devices denied in the ACL file
	Signaled int      // broker pid sent SIGHUP, 0 if none
}

// ApplyBroker rewrites the CRL and the ACL file's deny section from the
// registry, then sends SIGHUP to the broker.
func (s *Store) ApplyBroker(ctx context.Context, bf BrokerFiles) (BrokerResult, error) {
	var res BrokerResult
	if bf.CRLFile != "" {
		if bf.CA == nil {
			return res, errors.New("registry: a CRL needs the CA")
		}
		revoked, err := s.RevokedCertificates(ctx)
		if err != nil {
			return res, err
		}
		if err := WriteCRL(bf.CA, revoked, bf.CRLFile, bf.CRLValidity); err != nil {
			return res, err
		}
		res.Revoked = len(revoked)
	}
	if bf.ACLFile != "" {
		ids, err := s.Blocked(ctx)
		if err != nil {
			return res, err
		}
		if err := WriteACLDenies(bf.ACLFile, ids); err != nil {
			return res, err
		}
		res.Denied = ids
	}
	if bf.PIDFile != "" {
		pid, err := SignalBroker(bf.PIDFile)
		if err != nil {
			return res, err
		}
		res.Signaled = pid
	}
	return res, nil
}

// WriteCRL writes the CA's CRL of revoked to path (0644), numbered by the
// current time so every new CRL has a higher number.
func WriteCRL(ca *certs.CA, revoked []certs.Revoked, path string, validity time.Duration) error {
	if validity <= 0 {
		validity = certs.DefaultCRLValidity
	}
	pem, err := ca.CRL(revoked, big.NewInt(time.Now().UnixNano()), validity)
	if err != nil {
		return err
	}
	return certs.WriteFile(path, pem, 0o644)
}

// WriteACLDenies rewrites the part of the ACL file after ACLMarker with a
// "user <id> / topic deny #" section per id (appending the marker when the
// file has none). Mosquitto applies a user's deny before any pattern.
func WriteACLDenies(path string, ids []string) error {
	old, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("registry: ACL file: %w", err)
	}
	head := old
	if i := bytes.Index(old, []byte(ACLMarker)); i >= 0 {
		head = old[:i]
	}
	var b bytes.Buffer
	b.Write(bytes.TrimRight(head, "\n"))
	b.WriteString("\n\n" + ACLMarker + "\n")
	for _, id := range ids {
		if err := certs.CheckID(id); err != nil { // never write a line an id could bend
			return fmt.Errorf("registry: ACL file: %w", err)
		}
		fmt.Fprintf(&b, "user %s\ntopic deny #\n", id)
	}
	st, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("registry: ACL file: %w", err)
	}
	return certs.WriteFile(path, b.Bytes(), st.Mode().Perm())
}

// SignalBroker sends SIGHUP to the process whose id is in pidFile, so
// Mosquitto rereads its CRL and ACL file. It returns the pid.
func SignalBroker(pidFile string) (int, error) {
	b, err := os.ReadFile(pidFile)
	if err != nil {
		return 0, fmt.Errorf("registry: broker pid file: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return 0, fmt.Errorf("registry: broker pid file %s: %q is not a process id", pidFile, strings.TrimSpace(string(b)))
	}
	if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
		return 0, fmt.Errorf("registry: signal broker (pid %d from %s): %w", pid, pidFile, err)
	}
	return pid, nil
}
