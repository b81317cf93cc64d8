//go:build !unix

package hub

import "net"

// rawWriter is unix-only; elsewhere every write goes through the
// connection's goroutine.
type rawWriter struct{ rest []byte }

func newRawWriter(net.Conn) *rawWriter { return nil }

func (w *rawWriter) tryWrite([]byte) bool { return false }

func (w *rawWriter) close() {}
