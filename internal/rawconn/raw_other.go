//go:build !linux

package rawconn

import "net"

// rawWriter writes only on Linux; elsewhere every write goes through the
// connection's goroutine.
type rawWriter struct{ rest []byte }

func (w *rawWriter) init(net.Conn) bool { return false }

func (w *rawWriter) tryWrite([]byte) bool { return false }

func (w *rawWriter) close() {}
