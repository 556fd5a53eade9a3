"""Cell tokens and a linear probe: do an encoder's tokens separate cell types without any decoder?"""
