package testredis

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"
)

// go-redis logs what its connection pools go through (for example
// "connection refused" while a test has stopped a server on purpose) to
// the process's stderr, where it floods the output of every test that
// runs. A test binary that uses this package routes those lines to the
// log of the test that started the server they name, so that they are
// shown only when that test fails; lines that name no server of a
// running test are dropped.
func init() {
	redis.SetLogger(testLogger{})
}

var (
	routesMu sync.Mutex
	routes   = map[int]testing.TB{} // server port -> the test that started it
)

// routeLogs sends go-redis's log lines about port to t until t ends.
func routeLogs(t testing.TB, port int) {
	routesMu.Lock()
	routes[port] = t
	routesMu.Unlock()
	t.Cleanup(func() {
		routesMu.Lock()
		delete(routes, port)
		routesMu.Unlock()
	})
}

var loopbackPort = regexp.MustCompile(`127\.0\.0\.1:(\d+)`)

type testLogger struct{}

func (testLogger) Printf(_ context.Context, format string, v ...any) {
	line := fmt.Sprintf(format, v...)
	routesMu.Lock()
	defer routesMu.Unlock() // held while logging: the test cannot end meanwhile
	for _, m := range loopbackPort.FindAllStringSubmatch(line, -1) {
		port, _ := strconv.Atoi(m[1])
		if t, ok := routes[port]; ok {
			t.Logf("go-redis: %s", line)
			return
		}
	}
}
