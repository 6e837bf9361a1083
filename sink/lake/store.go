package lake

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/minio/minio-go/v7"
)

// objectStore is the part of S3 the sink uses.
type objectStore interface {
	// Put stores data under key; when it returns nil the object is durable.
	Put(ctx context.Context, key string, data []byte) error
	// Get returns the object's content, or an error wrapping errNotFound.
	Get(ctx context.Context, key string) ([]byte, error)
	// Delete removes key; a missing key is not an error.
	Delete(ctx context.Context, key string) error
	// List returns the keys under prefix, in lexical order.
	List(ctx context.Context, prefix string) ([]string, error)
	// Ping checks that the bucket is reachable.
	Ping(ctx context.Context) error
}

var errNotFound = errors.New("object not found")

// minioStore is the objectStore of a real S3-compatible server.
type minioStore struct {
	cl     *minio.Client
	bucket string
	// partSize is the multipart part size; objects larger than it are
	// uploaded in parts by minio-go.
	partSize uint64
}

func (s *minioStore) Put(ctx context.Context, key string, data []byte) error {
	_, err := s.cl.PutObject(ctx, s.bucket, key, bytes.NewReader(data), int64(len(data)), minio.PutObjectOptions{
		ContentType:    "application/vnd.apache.parquet",
		PartSize:       s.partSize,
		SendContentMd5: false,
	})
	if err != nil {
		return fmt.Errorf("put %s: %w", key, err)
	}
	return nil
}

func (s *minioStore) Get(ctx context.Context, key string) ([]byte, error) {
	o, err := s.cl.GetObject(ctx, s.bucket, key, minio.GetObjectOptions{})
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", key, err)
	}
	defer o.Close()
	b, err := io.ReadAll(o)
	if err != nil {
		if minio.ToErrorResponse(err).Code == "NoSuchKey" {
			return nil, fmt.Errorf("get %s: %w", key, errNotFound)
		}
		return nil, fmt.Errorf("get %s: %w", key, err)
	}
	return b, nil
}

func (s *minioStore) Delete(ctx context.Context, key string) error {
	err := s.cl.RemoveObject(ctx, s.bucket, key, minio.RemoveObjectOptions{})
	if err != nil && minio.ToErrorResponse(err).Code != "NoSuchKey" {
		return fmt.Errorf("delete %s: %w", key, err)
	}
	return nil
}

func (s *minioStore) List(ctx context.Context, prefix string) ([]string, error) {
	var keys []string
	for o := range s.cl.ListObjects(ctx, s.bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
		if o.Err != nil {
			return nil, fmt.Errorf("list %s: %w", prefix, o.Err)
		}
		keys = append(keys, o.Key)
	}
	return keys, nil
}

func (s *minioStore) Ping(ctx context.Context) error {
	ok, err := s.cl.BucketExists(ctx, s.bucket)
	if err != nil {
		return fmt.Errorf("s3 bucket %s: %w", s.bucket, err)
	}
	if !ok {
		return fmt.Errorf("s3 bucket %s does not exist (run iotpipe init)", s.bucket)
	}
	return nil
}
