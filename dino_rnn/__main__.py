import sys

from dino_rnn.cli import main

sys.exit(main())
