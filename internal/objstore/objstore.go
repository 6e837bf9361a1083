// Package objstore holds the S3-compatible object store settings shared by
// the init command and the lake sink, and builds a minio-go client from
// them. minio-go was chosen over aws-sdk-go-v2 because it is one small
// module, speaks plain S3 (path-style) to any compatible server such as
// versitygw or SeaweedFS, and handles multipart uploads by itself.
package objstore

import (
	"context"
	"errors"
	"fmt"
	"net/url"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/minio/minio-go/v7/pkg/s3utils"

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
	return p.Err()
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
	return minio.New(host, &minio.Options{
		Creds:        credentials.NewStaticV4(c.AccessKey, c.SecretKey, ""),
		Secure:       secure,
		Region:       c.Region,
		BucketLookup: minio.BucketLookupPath,
	})
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
