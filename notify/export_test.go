package notify

// DecodeKey is decodeSecret, for the tests' receivers.
var DecodeKey = decodeSecret
