// Package objstore holds the S3-compatible object store settings shared by
// the init command and the lake sink, and builds a minio-go client from
// them. minio-go was chosen over aws-sdk-go-v2 because it is one small
// module, speaks plain S3 (path-style) to any compatible server such as
// versitygw or SeaweedFS, and handles multipart uploads by itself.
//
// TLS: an https:// endpoint is verified against CAFile (PEM) when it is
// set, else against the system roots; a certificate that does not chain
// to them or does not hold the endpoint's host name is a *config.FieldError
// on CAFile or Endpoint (see Explain), never retried as an outage.
//
// versitygw's admin API (ChangeBucketOwner, BucketOwner) lets setup, with
// the root key, hand the lake bucket to the lake sink's own scoped user,
// which can then reach no other bucket and no admin operation.
package objstore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/minio/minio-go/v7/pkg/s3utils"
	"github.com/minio/minio-go/v7/pkg/signer"

	"github.com/iotpipe/iotpipe/internal/certs"
	"github.com/iotpipe/iotpipe/internal/config"
)

// Config is how to reach the object store.
type Config struct {
	// Endpoint is the server URL, http:// or https://.
	Endpoint string
	// AccessKey and SecretKey are the S3 credentials.
	AccessKey string
	SecretKey string
	// Region is sent in the request signature.
	Region string
	// Bucket holds the lake.
	Bucket string
	// CAFile is a PEM file of the CA(s) that sign the server's certificate
	// (https:// endpoints); empty: the system roots.
	CAFile string
}

// DefaultConfig is a local versitygw: http://localhost:7070, region
// us-east-1, bucket iotpipe-lake, no credentials.
func DefaultConfig() Config {
	return Config{Endpoint: "http://localhost:7070", Region: "us-east-1", Bucket: "iotpipe-lake"}
}

// Validate checks the settings without contacting the server; each
// problem is a *config.FieldError.
func (c *Config) Validate() error {
	var p config.Problems
	if _, _, err := c.endpoint(); err != nil {
		p.Add("Endpoint", "%v", err)
	}
	p.Check(c.AccessKey == "", "AccessKey", "required")
	p.Check(c.SecretKey == "", "SecretKey", "required")
	if err := s3utils.CheckValidBucketNameStrict(c.Bucket); err != nil {
		p.Add("Bucket", "%q: %v", c.Bucket, err)
	}
	if c.CAFile != "" {
		if _, err := c.rootCAs(); err != nil {
			p.Add("CAFile", "%v", err)
		}
	}
	return p.Err()
}

// rootCAs reads CAFile.
func (c *Config) rootCAs() (*x509.CertPool, error) {
	pem, err := os.ReadFile(c.CAFile)
	if err != nil {
		return nil, fmt.Errorf("read CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no PEM certificate", c.CAFile)
	}
	return pool, nil
}

// transport is minio's default transport, verifying against CAFile when set.
func (c *Config) transport(secure bool) (*http.Transport, error) {
	tr, err := minio.DefaultTransport(secure)
	if err != nil {
		return nil, err
	}
	if secure && c.CAFile != "" {
		pool, err := c.rootCAs()
		if err != nil {
			return nil, &config.FieldError{Field: "CAFile", Err: err}
		}
		if tr.TLSClientConfig == nil {
			tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		tr.TLSClientConfig.RootCAs = pool
	}
	return tr, nil
}

// Explain returns err as a *config.FieldError naming the setting to fix
// when it is a TLS verification failure: the server's certificate does not
// chain to CAFile (or the system roots), or does not hold the endpoint's
// host name. Other errors are returned as they are.
func (c *Config) Explain(err error) error {
	switch {
	case err == nil:
		return nil
	case certs.IsUnknownAuthority(err):
		where := "the system roots"
		if c.CAFile != "" {
			where = c.CAFile
		}
		return &config.FieldError{Field: "CAFile", Err: fmt.Errorf("the object store's certificate at %s is not signed by a CA in %s: %w", c.Endpoint, where, err)}
	case certs.IsNameMismatch(err):
		return &config.FieldError{Field: "Endpoint", Err: fmt.Errorf("the object store's certificate does not hold the host name of %s: %w", c.Endpoint, err)}
	}
	return err
}

func (c *Config) endpoint() (host string, secure bool, err error) {
	u, err := url.Parse(c.Endpoint)
	if err != nil {
		return "", false, fmt.Errorf("endpoint %q: %w", c.Endpoint, err)
	}
	switch u.Scheme {
	case "http":
	case "https":
		secure = true
	default:
		return "", false, fmt.Errorf("endpoint %q must start with http:// or https://", c.Endpoint)
	}
	if u.Host == "" || (u.Path != "" && u.Path != "/") {
		return "", false, fmt.Errorf("endpoint %q must be scheme://host[:port] with no path", c.Endpoint)
	}
	return u.Host, secure, nil
}

// New returns a client for c (path-style requests, which every
// S3-compatible server understands).
func New(c Config) (*minio.Client, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	host, secure, _ := c.endpoint()
	tr, err := c.transport(secure)
	if err != nil {
		return nil, err
	}
	return minio.New(host, &minio.Options{
		Creds:        credentials.NewStaticV4(c.AccessKey, c.SecretKey, ""),
		Secure:       secure,
		Region:       c.Region,
		BucketLookup: minio.BucketLookupPath,
		Transport:    tr,
	})
}

// ErrAdmin matches (errors.Is) every *AdminError: versitygw's admin API
// refused a request.
var ErrAdmin = errors.New("object store admin API refused the request")

// AdminError is a refusal of versitygw's admin API.
type AdminError struct {
	Path    string
	Status  int
	Code    string // e.g. XAdminAccessDenied, XAdminUserExists
	Message string
}

func (e *AdminError) Error() string {
	return fmt.Sprintf("%v: %s: HTTP %d %s %s", ErrAdmin, e.Path, e.Status, e.Code, e.Message)
}

// Is makes errors.Is(err, ErrAdmin) true.
func (e *AdminError) Is(target error) bool { return target == ErrAdmin }

// admin sends a signed versitygw admin request (PATCH path?query, with
// body) with c's key, which must be the root key or an admin user's, and
// returns the answer's body.
func (c *Config) admin(ctx context.Context, path string, query url.Values, body []byte) ([]byte, error) {
	host, secure, err := c.endpoint()
	if err != nil {
		return nil, err
	}
	tr, err := c.transport(secure)
	if err != nil {
		return nil, err
	}
	scheme := "http"
	if secure {
		scheme = "https"
	}
	u := url.URL{Scheme: scheme, Host: host, Path: path, RawQuery: query.Encode()}
	req, err := http.NewRequestWithContext(ctx, http.MethodPatch, u.String(), bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(body)
	req.Header.Set("X-Amz-Content-Sha256", hex.EncodeToString(sum[:]))
	req = signer.SignV4(*req, c.AccessKey, c.SecretKey, "", c.Region)
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return nil, c.Explain(err)
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode >= 300 {
		var e struct {
			Code    string `xml:"Code"`
			Message string `xml:"Message"`
		}
		_ = xml.Unmarshal(answer, &e)
		return nil, &AdminError{Path: path, Status: resp.StatusCode, Code: e.Code, Message: strings.TrimSpace(e.Message)}
	}
	return answer, nil
}

// BucketOwner returns the access key that owns bucket, by versitygw's
// admin API ("" when the bucket does not exist).
func BucketOwner(ctx context.Context, c Config, bucket string) (string, error) {
	body, err := c.admin(ctx, "/list-buckets", nil, nil)
	if err != nil {
		return "", fmt.Errorf("list buckets and owners: %w", err)
	}
	var res struct {
		Buckets []struct {
			Name  string `xml:"Name"`
			Owner string `xml:"Owner"`
		} `xml:"Buckets"`
	}
	if err := xml.Unmarshal(body, &res); err != nil {
		return "", fmt.Errorf("list buckets and owners: %w", err)
	}
	for _, b := range res.Buckets {
		if b.Name == bucket {
			return b.Owner, nil
		}
	}
	return "", nil
}

// ChangeBucketOwner makes the user owner (an access key) the owner of
// bucket, by versitygw's admin API, with c's key (root or admin). It is
// idempotent; changed tells whether the owner was another before.
func ChangeBucketOwner(ctx context.Context, c Config, bucket, owner string) (changed bool, err error) {
	cur, err := BucketOwner(ctx, c, bucket)
	if err != nil {
		return false, err
	}
	if cur == owner {
		return false, nil
	}
	if _, err := c.admin(ctx, "/change-bucket-owner/", url.Values{"bucket": {bucket}, "owner": {owner}}, nil); err != nil {
		return false, fmt.Errorf("make %s the owner of bucket %s: %w", owner, bucket, err)
	}
	return true, nil
}

// EnsureBucket creates the bucket unless it exists; created tells which.
func EnsureBucket(ctx context.Context, cl *minio.Client, bucket, region string) (created bool, err error) {
	ok, err := cl.BucketExists(ctx, bucket)
	if err != nil {
		return false, fmt.Errorf("check bucket %q: %w", bucket, err)
	}
	if ok {
		return false, nil
	}
	if err := cl.MakeBucket(ctx, bucket, minio.MakeBucketOptions{Region: region}); err != nil {
		var resp minio.ErrorResponse
		if errors.As(err, &resp) && resp.Code == "BucketAlreadyOwnedByYou" { // lost a race with another init
			return false, nil
		}
		return false, fmt.Errorf("create bucket %q: %w", bucket, err)
	}
	return true, nil
}

// EnsureUser creates the versitygw user access with secret and role "user"
// (no admin API, no bucket creation: only the buckets it owns or is
// granted), with c's key (root or admin), unless it exists; created tells
// which. An existing user keeps its secret.
func EnsureUser(ctx context.Context, c Config, access, secret string) (created bool, err error) {
	body, err := xml.Marshal(struct {
		XMLName xml.Name `xml:"Account"`
		Access  string   `xml:"Access"`
		Secret  string   `xml:"Secret"`
		Role    string   `xml:"Role"`
	}{Access: access, Secret: secret, Role: "user"})
	if err != nil {
		return false, err
	}
	_, err = c.admin(ctx, "/create-user", nil, body)
	var ae *AdminError
	if errors.As(err, &ae) && ae.Code == "XAdminUserExists" {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("create user %s: %w", access, err)
	}
	return true, nil
}

// DeleteUser removes the versitygw user access, with c's key (root or
// admin).
func DeleteUser(ctx context.Context, c Config, access string) error {
	if _, err := c.admin(ctx, "/delete-user", url.Values{"access": {access}}, nil); err != nil {
		return fmt.Errorf("delete user %s: %w", access, err)
	}
	return nil
}
