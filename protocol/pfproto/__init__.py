"""PowerFlow protocol definitions shared by the node firmware and the host."""
