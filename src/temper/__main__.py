from temper.cli import main

raise SystemExit(main())
