package ws

import "encoding/binary"

// WebSocket opcodes (RFC 6455, section 5.2) of the frames a server sends.
const (
	opText  byte = 1
	opClose byte = 8
	opPing  byte = 9
	opPong  byte = 10
)

// appendFrame appends one final, unmasked WebSocket frame (as a server
// sends them, RFC 6455 section 5.2) with the given opcode and payload.
func appendFrame(dst []byte, opcode byte, payload []byte) []byte {
	dst = append(dst, 0x80|opcode)
	switch n := len(payload); {
	case n < 126:
		dst = append(dst, byte(n))
	case n <= 0xFFFF:
		dst = append(dst, 126)
		dst = binary.BigEndian.AppendUint16(dst, uint16(n))
	default:
		dst = append(dst, 127)
		dst = binary.BigEndian.AppendUint64(dst, uint64(n))
	}
	return append(dst, payload...)
}
