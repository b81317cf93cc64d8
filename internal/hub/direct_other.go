//go:build !unix

package hub

import "net"

// rawWriter is unix-only; elsewhere every write goes through the
// connection's goroutine.
type rawWriter struct{ rest []byte }

func (w *rawWriter) init(net.Conn) bool { return false }

func (w *rawWriter) tryWrite([]byte) bool { return false }

func (w *rawWriter) close() {}
