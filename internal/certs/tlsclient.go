package certs

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// ClientFiles are the files of a mutual-TLS client (the bridge, the
// simulator). They are read again for every connection, so replacing them
// on disk (rotation) takes effect at the next (re)connect without a
// restart.
type ClientFiles struct {
	// CAFile holds the CA certificates the server's certificate must chain
	// to; empty uses the system's roots.
	CAFile string
	// CertFile and KeyFile are the client's certificate and key (PEM);
	// both or neither.
	CertFile, KeyFile string
	// ServerName is the name the server's certificate must hold; empty
	// uses the host of the URL.
	ServerName string
}

// Which file a ClientFiles error is about (errors.As on *FileError).
const (
	FieldCAFile   = "CAFile"
	FieldCertFile = "CertFile"
	FieldKeyFile  = "KeyFile"
)

// FileError names the ClientFiles field whose file could not be used.
type FileError struct {
	Field string
	Err   error
}

func (e *FileError) Error() string { return e.Field + ": " + e.Err.Error() }
func (e *FileError) Unwrap() error { return e.Err }

// Check loads every file once and reports each problem as a *FileError.
func (f ClientFiles) Check() error {
	var errs []error
	if f.CAFile != "" {
		if _, err := LoadPool(f.CAFile); err != nil {
			errs = append(errs, &FileError{FieldCAFile, err})
		}
	}
	switch {
	case f.CertFile == "" && f.KeyFile == "":
	case f.CertFile == "":
		errs = append(errs, &FileError{FieldCertFile, errors.New("a key file is given without its certificate file")})
	case f.KeyFile == "":
		errs = append(errs, &FileError{FieldKeyFile, errors.New("a certificate file is given without its key file")})
	default:
		if _, err := f.keyPair(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (f ClientFiles) keyPair() (*tls.Certificate, error) {
	if _, err := LoadCertFile(f.CertFile); err != nil {
		return nil, &FileError{FieldCertFile, err}
	}
	if _, err := os.Stat(f.KeyFile); err != nil {
		return nil, &FileError{FieldKeyFile, err}
	}
	c, err := tls.LoadX509KeyPair(f.CertFile, f.KeyFile)
	if err != nil {
		// tls's message may quote neither file's content; say which pair.
		return nil, &FileError{FieldKeyFile, fmt.Errorf("%s does not match %s or is not a PEM key: %w", f.KeyFile, f.CertFile, err)}
	}
	return &c, nil
}

// Config returns the TLS configuration of one connection to host: TLS 1.2
// at least, the CA file read now, and the client certificate read during
// the handshake (GetClientCertificate), so both follow the files.
func (f ClientFiles) Config(host string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: f.ServerName}
	if cfg.ServerName == "" {
		cfg.ServerName = host
	}
	if f.CAFile != "" {
		pool, err := LoadPool(f.CAFile)
		if err != nil {
			return nil, &FileError{FieldCAFile, err}
		}
		cfg.RootCAs = pool
	}
	if f.CertFile != "" {
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return f.keyPair()
		}
	}
	return cfg, nil
}

// IsNameMismatch reports whether err is the server's certificate not
// holding the expected name.
func IsNameMismatch(err error) bool {
	var he x509.HostnameError
	return errors.As(err, &he)
}

// IsUnknownAuthority reports whether err is the server's certificate not
// chaining to the CA file.
func IsUnknownAuthority(err error) bool {
	var ua x509.UnknownAuthorityError
	return errors.As(err, &ua)
}
