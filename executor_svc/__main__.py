import sys

from executor_svc.main import main

sys.exit(main())
