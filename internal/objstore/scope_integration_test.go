//go:build integration

package objstore_test

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/iotpipe/iotpipe/internal/objstore"
	"github.com/iotpipe/iotpipe/internal/testenv"
)

// TestLakeKeyIsScoped: the lake sink's key (IOTPIPE_S3_ACCESS_KEY, a
// versitygw user of role "user") reaches the bucket handed to it and
// nothing else: not a bucket it does not own, not bucket creation, not the
// admin API. The root key (IOTPIPE_S3_ADMIN_ACCESS_KEY) does all of it and
// is used by setup only.
func TestLakeKeyIsScoped(t *testing.T) {
	env := testenv.Load(t)
	if env.S3Admin.AccessKey == env.S3Config.AccessKey {
		t.Fatalf("IOTPIPE_S3_ACCESS_KEY is the root key %q: the services must give the lake its own key (scripts/services.sh env sets IOTPIPE_S3_ADMIN_ACCESS_KEY)", env.S3Config.AccessKey)
	}
	ctx := testenv.Context(t, time.Minute)
	lake := env.S3(t)
	root := env.S3AdminClient(t)
	denied := func(what string, err error) {
		t.Helper()
		var resp minio.ErrorResponse
		if !errors.As(err, &resp) || resp.Code != "AccessDenied" {
			t.Errorf("lake key, %s: want AccessDenied, got %v", what, err)
		} else {
			t.Logf("lake key, %s: %s", what, resp.Code)
		}
	}
	put := func(cl *minio.Client, bucket string) error {
		_, err := cl.PutObject(ctx, bucket, "x/probe.txt", bytes.NewReader([]byte("probe")), 5, minio.PutObjectOptions{})
		return err
	}

	// Its own bucket (made by root and handed over, as init does): read and write.
	own := env.Bucket(t)
	if owner, err := objstore.BucketOwner(ctx, env.S3Admin, own); err != nil || owner != env.S3Config.AccessKey {
		t.Fatalf("owner of %s: %q, %v; want %s", own, owner, err, env.S3Config.AccessKey)
	}
	if err := put(lake, own); err != nil {
		t.Fatalf("lake key cannot write its own bucket: %v", err)
	}
	if _, err := lake.StatObject(ctx, own, "x/probe.txt", minio.StatObjectOptions{}); err != nil {
		t.Fatalf("lake key cannot read its own bucket: %v", err)
	}

	// Another bucket (root's): no list, no read, no write, no delete.
	other := env.BucketName(t)
	if err := root.MakeBucket(ctx, other, minio.MakeBucketOptions{Region: env.S3Config.Region}); err != nil {
		t.Fatal(err)
	}
	if err := put(root, other); err != nil {
		t.Fatal(err)
	}
	denied("write another bucket", put(lake, other))
	_, err := lake.StatObject(ctx, other, "x/probe.txt", minio.StatObjectOptions{})
	denied("read another bucket", err)
	for o := range lake.ListObjects(ctx, other, minio.ListObjectsOptions{Recursive: true}) {
		denied("list another bucket", o.Err)
		break
	}
	denied("delete in another bucket", lake.RemoveObject(ctx, other, "x/probe.txt", minio.RemoveObjectOptions{}))
	denied("delete another bucket", lake.RemoveBucket(ctx, other))

	// No bucket creation.
	extra := env.BucketName(t)
	denied("create a bucket", lake.MakeBucket(ctx, extra, minio.MakeBucketOptions{Region: env.S3Config.Region}))

	// No admin API: neither listing buckets and owners nor taking a bucket.
	if _, err := objstore.BucketOwner(ctx, env.S3Config, other); !errors.Is(err, objstore.ErrAdmin) {
		t.Errorf("lake key, admin list-buckets: want ErrAdmin, got %v", err)
	} else {
		t.Logf("lake key, admin API: %v", err)
	}
	if _, err := objstore.ChangeBucketOwner(ctx, env.S3Config, other, env.S3Config.AccessKey); !errors.Is(err, objstore.ErrAdmin) {
		t.Errorf("lake key, admin change-bucket-owner: want ErrAdmin, got %v", err)
	}
	if owner, err := objstore.BucketOwner(ctx, env.S3Admin, other); err != nil || owner != env.S3Admin.AccessKey {
		t.Errorf("owner of %s after the lake key's attempts: %q, %v; want %s", other, owner, err, env.S3Admin.AccessKey)
	}

	// Its bucket list holds its own bucket, not root's.
	buckets, err := lake.ListBuckets(ctx)
	if err != nil {
		t.Fatalf("lake key, list its buckets: %v", err)
	}
	for _, b := range buckets {
		if b.Name == other {
			t.Errorf("the lake key's bucket list shows root's bucket %s", other)
		}
	}
}

// TestEnsureUser: init's way of making the lake's user (versitygw IAM)
// creates it once; the new key works on a bucket handed to it and on
// nothing else; the lake key cannot make users.
func TestEnsureUser(t *testing.T) {
	env := testenv.Load(t)
	ctx := testenv.Context(t, time.Minute)
	user := testenv.Name(t, "u")
	t.Cleanup(func() {
		if err := objstore.DeleteUser(context.Background(), env.S3Admin, user); err != nil {
			t.Logf("cleanup: %v", err)
		}
	})
	for i, want := range []bool{true, false} {
		created, err := objstore.EnsureUser(ctx, env.S3Admin, user, "secret-"+user)
		if err != nil || created != want {
			t.Fatalf("EnsureUser #%d: created=%v err=%v, want created=%v", i+1, created, err, want)
		}
	}
	bucket := env.BucketName(t)
	root := env.S3AdminClient(t)
	if err := root.MakeBucket(ctx, bucket, minio.MakeBucketOptions{Region: env.S3Config.Region}); err != nil {
		t.Fatal(err)
	}
	if changed, err := objstore.ChangeBucketOwner(ctx, env.S3Admin, bucket, user); err != nil || !changed {
		t.Fatalf("ChangeBucketOwner: changed=%v err=%v", changed, err)
	}
	if changed, err := objstore.ChangeBucketOwner(ctx, env.S3Admin, bucket, user); err != nil || changed {
		t.Fatalf("ChangeBucketOwner again: changed=%v err=%v, want no change", changed, err)
	}
	cfg := env.S3Config
	cfg.AccessKey, cfg.SecretKey = user, "secret-"+user
	cl, err := objstore.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.PutObject(ctx, bucket, "a", bytes.NewReader([]byte("a")), 1, minio.PutObjectOptions{}); err != nil {
		t.Fatalf("the new user cannot write its bucket: %v", err)
	}
	if _, err := objstore.EnsureUser(ctx, env.S3Config, testenv.Name(t, "v"), "x"); !errors.Is(err, objstore.ErrAdmin) {
		t.Fatalf("the lake key made a user: %v", err)
	}
}
