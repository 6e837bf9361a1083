//go:build integration

package kafka3

import (
	"os"
	"testing"

	"github.com/iotpipe/iotpipe/internal/testenv"
)

// TestMain removes the iotpipe binary the tests built.
func TestMain(m *testing.M) {
	code := m.Run()
	testenv.RemoveBinary()
	os.Exit(code)
}
