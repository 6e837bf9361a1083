//go:build integration

package chaos

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
